"""What the ephys readers return and the feature code consumes: recordings, sweeps, stimuli, QC.

Units (DESIGN.md; SI-derived, carried in names where ambiguous): membrane potential in mV, current in pA,
time in s, sampling rate in Hz. Arrays are 1-D ``(sample,)`` float64 per sweep and channel.

A reader (:mod:`neurolake.ephys.abf`, :mod:`neurolake.ephys.nwb`) returns one :class:`Recording` per file with
its :class:`Sweep` s; :func:`neurolake.ephys.stimulus.classify` gives each sweep a :class:`Stimulus`;
:func:`neurolake.ephys.qc.check_sweep` a :class:`SweepQC`; :func:`neurolake.ephys.features.analyze` the spikes
and feature rows. The ETL (:mod:`neurolake.ephys.etl`) turns these into Delta tables.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CURRENT_CLAMP = "current_clamp"
VOLTAGE_CLAMP = "voltage_clamp"
UNKNOWN = "unknown"
CLAMP_MODES = (CURRENT_CLAMP, VOLTAGE_CLAMP, UNKNOWN)

# stimulus classes (Allen Cell Types / IPFX naming where one exists)
LONG_SQUARE = "long_square"     # one step >= 500 ms
SHORT_SQUARE = "short_square"   # one step < 10 ms
SQUARE = "square"               # one step in between
RAMP = "ramp"                   # a linear ramp
NOISE = "noise"                 # anything irregular that is not flat
HOLD = "hold"                   # no stimulus: gap-free / holding only
STIMULUS_CLASSES = (LONG_SQUARE, SHORT_SQUARE, SQUARE, RAMP, NOISE, HOLD, UNKNOWN)

# feature value statuses (issue 18): every feature value carries one
OK = "ok"
NOT_APPLICABLE = "not_applicable"
QC_EXCLUDED = "qc_excluded"


def failed(reason: str) -> str:
    """The status ``failed:<reason>`` (reason: short, lower case, no newline)."""
    return "failed:" + " ".join(str(reason).split())[:200]


@dataclass
class Sweep:
    """One sweep of one channel.

    ``response``: (sample,) float64, what the amplifier recorded: membrane potential in mV (current clamp) or
    membrane current in pA (voltage clamp). ``command``: (sample,) float64, the stimulus the amplifier applied:
    injected current in pA (current clamp) or command potential in mV (voltage clamp); None when the file has
    no command waveform for this channel. ``start_s``: sweep start from the file's start.
    """

    number: int                     # sweep index in the file, 0-based
    channel: int                    # ADC channel index, 0-based
    clamp_mode: str                 # one of CLAMP_MODES
    sampling_rate_hz: float
    response: np.ndarray
    response_unit: str              # "mV" | "pA" (converted to these), or the raw unit when unknown
    command: np.ndarray | None = None
    command_unit: str | None = None  # "pA" | "mV" | None
    start_s: float = 0.0
    label: str = ""                 # stimulus / series name as recorded (NWB stimulus_description, ABF protocol)
    flags: list[str] = field(default_factory=list)   # reader QC flags, e.g. "clamp_mode_ambiguous"

    @property
    def n_samples(self) -> int:
        return int(self.response.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sampling_rate_hz

    def time_s(self) -> np.ndarray:
        """(sample,) float64: time of each sample from the sweep start, s."""
        return np.arange(self.n_samples, dtype=np.float64) / self.sampling_rate_hz


@dataclass
class Recording:
    """One patch-clamp file as read. ``format``: "abf1" | "abf2" | "nwb"; ``sweeps`` in (sweep, channel) order."""

    path: str
    format: str
    format_version: str
    recorded_at: dt.datetime | None          # UTC-aware when the file says so, else naive local time as recorded
    protocol: str
    cell: str                                # subject/cell id (file stem unless the file names one)
    sweeps: list[Sweep]
    metadata: dict[str, Any] = field(default_factory=dict)   # JSON-able: units, tags, subject, device …
    flags: list[str] = field(default_factory=list)           # file-level QC flags


@dataclass
class Stimulus:
    """What a sweep's command waveform is. Amplitudes in the command's unit (pA current clamp, mV voltage
    clamp), relative to the holding level; ``start_s``/``end_s`` of the step or ramp from the sweep start."""

    stimulus_class: str             # one of STIMULUS_CLASSES
    amplitude: float | None         # step amplitude (square) or final ramp amplitude, command unit
    holding: float | None           # baseline (holding) level of the command, command unit
    start_s: float | None
    end_s: float | None
    rule: str                       # the rule that classified it, human-readable, e.g. "one step of 1000.0 ms ≥ 500 ms"


@dataclass
class SweepQC:
    """Per-sweep quality control. ``passed`` False → the sweep's features are ``qc_excluded`` and it never
    reaches its stimulus type's cell features. ``measures`` in units carried by their names (``_mv``, ``_pa``,
    ``_ms``); ``thresholds`` the versioned criteria applied (stored with the rows)."""

    passed: bool
    reasons: list[str]
    measures: dict[str, float | None]
    thresholds_version: str
    thresholds: dict[str, float]
