"""ABF and NWB readers on the shipped recordings (data/ephys/abf, data/ephys/nwb), checked against what pyabf and
pynwb read themselves and against the content table of each folder's SOURCE.md."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pyabf
import pynwb
import pytest

from neurolake.ephys import abf, nwb
from neurolake.ephys.model import CURRENT_CLAMP, UNKNOWN, VOLTAGE_CLAMP
from neurolake.errors import CorruptData, NotFound

EPHYS = Path(__file__).resolve().parents[2] / "data" / "ephys"
ABF_DIR = EPHYS / "abf"
NWB_FILE = EPHYS / "nwb" / "99111002.nwb"


def _source_table() -> dict[str, dict]:
    """The "Content" table of data/ephys/abf/SOURCE.md, one dict per file."""
    rows = {}
    for line in (ABF_DIR / "SOURCE.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 9 or not cells[0].endswith(".abf"):
            continue
        name, ver, chans, dacs, rate, shape, protocol, recorded, _ = cells
        m = re.fullmatch(r"(\d+) \((.*)\)", chans)
        n_sweeps, n_samples = (int(x) for x in shape.split("×"))
        rows[name] = {"version": ver, "n_channels": int(m.group(1)),
                      "adc_units": [u.strip() for u in m.group(2).split(",")],
                      "dac_units": [u.strip() for u in dacs.split(",")], "rate": float(rate),
                      "n_sweeps": n_sweeps, "n_samples": n_samples, "protocol": protocol,
                      "recorded": dt.date.fromisoformat(recorded)}
    return rows


SOURCE = _source_table()
# the rule stated in SOURCE.md: ADC mV + DAC pA = current clamp; ADC pA + DAC mV = voltage clamp
EXPECTED_MODE = {("mV", "pA"): CURRENT_CLAMP, ("pA", "mV"): VOLTAGE_CLAMP}


def test_source_table_lists_all_14_files():
    assert len(SOURCE) == 14
    assert sorted(SOURCE) == sorted(p.name for p in ABF_DIR.glob("*.abf"))


@pytest.mark.parametrize("name", sorted(SOURCE))
def test_abf_matches_source_md_and_pyabf(name):
    src = SOURCE[name]
    rec = abf.read(ABF_DIR / name)
    assert rec.format == ("abf1" if src["version"].startswith("1.") else "abf2")
    assert rec.format_version == src["version"]
    assert rec.protocol == src["protocol"]
    assert rec.recorded_at.date() == src["recorded"]
    assert rec.cell == Path(name).stem
    n_ch = src["n_channels"]
    assert len(rec.sweeps) == src["n_sweeps"] * n_ch
    assert [(s.number, s.channel) for s in rec.sweeps] == [
        (i, c) for i in range(src["n_sweeps"]) for c in range(n_ch)]
    json.dumps(rec.metadata)                          # JSON-able
    assert rec.metadata["adc_units"] == src["adc_units"]
    assert rec.metadata["dac_units"] == src["dac_units"]
    assert rec.metadata["sampling_rate_hz"] == src["rate"]

    ref = pyabf.ABF(str(ABF_DIR / name))
    for s in rec.sweeps:
        assert s.sampling_rate_hz == src["rate"]
        assert s.n_samples == src["n_samples"]
        assert s.response.dtype == np.float64
        adc, dac = src["adc_units"][s.channel], src["dac_units"][s.channel]
        mode = EXPECTED_MODE.get((adc, dac), UNKNOWN)
        assert s.clamp_mode == mode
        if mode == UNKNOWN:
            assert f"clamp_mode_ambiguous: ADC {adc}, DAC {dac}" in s.flags
        else:
            assert not any(f.startswith("clamp_mode_ambiguous") for f in s.flags)
            assert (s.response_unit, s.command_unit) == ((adc, dac))
        ref.setSweep(s.number, s.channel)
        # every unit in these files is already mV or pA (factor 1) or the unscaled "V" (kept raw)
        assert np.array_equal(s.response, ref.sweepY.astype(np.float64))
        assert s.command is not None and np.array_equal(s.command, np.asarray(ref.sweepC, dtype=np.float64))


def test_abf_clamp_modes_of_the_mixed_files():
    # file-level facts behind the parametrized test, spelled out
    r = abf.read(ABF_DIR / "2020_03_02_0000.abf")
    modes = {s.channel: s.clamp_mode for s in r.sweeps}
    assert modes == {0: CURRENT_CLAMP, 1: UNKNOWN}
    assert "clamp_mode_ambiguous: ADC pA, DAC V" in r.sweeps[1].flags
    assert r.sweeps[1].command_unit == "V"            # kept in its raw unit, not relabelled mV
    r = abf.read(ABF_DIR / "190619B_0003.abf")
    assert {s.channel: s.clamp_mode for s in r.sweeps} == {0: CURRENT_CLAMP, 1: UNKNOWN}
    assert "clamp_mode_ambiguous: ADC mV, DAC mV" in r.sweeps[1].flags


def test_clamp_mode_rule_and_unit_conversion():
    assert abf.clamp_mode_from_units("mV", "pA") == (CURRENT_CLAMP, None)
    assert abf.clamp_mode_from_units("pA", "mV") == (VOLTAGE_CLAMP, None)
    assert abf.clamp_mode_from_units("uV", "nA") == (CURRENT_CLAMP, None)
    assert abf.clamp_mode_from_units("nA", "mV") == (VOLTAGE_CLAMP, None)
    assert abf.clamp_mode_from_units("mV", None) == (UNKNOWN, "clamp_mode_ambiguous: ADC mV, no DAC")
    assert abf.clamp_mode_from_units("?", "pA") == (UNKNOWN, "clamp_mode_ambiguous: ADC ?, DAC pA")
    assert abf.clamp_mode_from_units("V", "pA")[0] == UNKNOWN
    assert abf.unit_kind("nA") == ("current", 1e3)
    assert abf.unit_kind("µV") == ("voltage", 1e-3)


def test_abf_tags_and_sweep_times():
    r = abf.read(ABF_DIR / "multichannelAbf1WithTags.abf")
    assert [t["comment"] for t in r.metadata["tags"]] == ["+TGOT", "-TGOT"]
    assert r.metadata["tags"][0]["time_s"] == pytest.approx(173.9776)
    r = abf.read(ABF_DIR / "2018_11_16_sh_0006.abf")
    assert [t["comment"] for t in r.metadata["tags"]] == ["+drug at 3min"]
    # sweeps start every sweep interval (5 s) although each lasts 0.1 s
    assert [s.start_s for s in r.sweeps[:3]] == [0.0, 5.0, 10.0]
    r = abf.read(ABF_DIR / "2020_07_29_0062.abf")
    assert r.metadata["acquisition_mode"] == "gap_free"


def test_abf_truncated_copy_is_corrupt(tmp_path):
    src = (ABF_DIR / "17o05028_ic_steps.abf").read_bytes()      # ABF2: 1,927,168 bytes
    half = tmp_path / "half.abf"
    half.write_bytes(src[: len(src) // 2])
    with pytest.raises(CorruptData, match=r"truncated ABF file 'half.abf': the header's data section ends at "
                                          r"byte 1926656 but the file has 963584 bytes"):
        abf.read(half)
    head = tmp_path / "head.abf"
    head.write_bytes(src[:300])                        # cut inside the header
    with pytest.raises(CorruptData, match="truncated ABF file 'head.abf': 300 bytes"):
        abf.read(head)
    src1 = (ABF_DIR / "05210017_vc_abf1.abf").read_bytes()       # ABF1: 720,000 int16 samples
    half1 = tmp_path / "half1.abf"
    half1.write_bytes(src1[: len(src1) // 2])
    with pytest.raises(CorruptData, match=r"truncated ABF file 'half1.abf': the header announces 720000 "
                                          r"samples .* but the file has 724480 bytes"):
        abf.read(half1)
    head1 = tmp_path / "head1.abf"
    head1.write_bytes(src1[:100])
    with pytest.raises(CorruptData, match="head1.abf"):
        abf.read(head1)


def test_abf_garbage_and_missing(tmp_path):
    junk = tmp_path / "junk.abf"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptData, match="not an ABF file"):
        abf.read(junk)
    fake = tmp_path / "fake.abf"
    fake.write_bytes(b"ABF2" + np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptData, match="fake.abf"):
        abf.read(fake)
    with pytest.raises(NotFound):
        abf.read(tmp_path / "absent.abf")


# ------------------------------------------------------------------------------------------------- NWB

def _pynwb_reference(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, response mV, command pA) per acquisition series, straight from pynwb, in starting_time order."""
    out = []
    with pynwb.NWBHDF5IO(str(path), "r", load_namespaces=True) as io:
        f = io.read()
        for name, ser in sorted(f.acquisition.items(), key=lambda kv: kv[1].starting_time):
            stim = f.stimulus["ics" + name[2:]]
            r = (ser.data[:].astype(np.float64) * ser.conversion + ser.offset) * 1e3
            c = (stim.data[:].astype(np.float64) * stim.conversion + stim.offset) * 1e12
            out.append((name, r, c))
    return out


@pytest.fixture(scope="module")
def nwb_rec():
    return nwb.read(NWB_FILE)


@pytest.fixture(scope="module")
def nwb_ref():
    return _pynwb_reference(NWB_FILE)


def _assert_same_as_reference(rec, ref):
    assert len(rec.sweeps) == len(ref) == 16
    for s, (name, r, c) in zip(rec.sweeps, ref, strict=True):
        assert rec.metadata["series"][s.number]["response"] == name
        assert s.n_samples == 7168 and s.sampling_rate_hz == 10000.0
        assert np.array_equal(s.response, r)
        assert np.array_equal(s.command, c)


def test_nwb_reads_like_pynwb(nwb_rec, nwb_ref):
    rec = nwb_rec
    assert rec.format == "nwb" and rec.format_version == "2.4.0"
    assert rec.flags == []
    assert rec.recorded_at == dt.datetime(1999, 1, 11, 12, 43, 13, tzinfo=dt.UTC)
    assert rec.cell == "99111002"                      # subject_id is "NA": the file stem
    assert rec.protocol == "Step"
    assert "ndx-lnmc-icephys-hierarchy" in rec.metadata["namespaces"]
    assert rec.metadata["subject"]["species"] == "Rattus norvegicus"
    json.dumps(rec.metadata)
    _assert_same_as_reference(rec, nwb_ref)
    for i, s in enumerate(rec.sweeps):
        assert (s.number, s.channel, s.clamp_mode) == (i, 0, CURRENT_CLAMP)
        assert (s.response_unit, s.command_unit) == ("mV", "pA")
        assert s.start_s == 2.0 * i
        assert rec.metadata["series"][i]["paired_by"] == "intracellular_recordings"
        assert rec.metadata["series"][i]["stimulus"] == f"ics__Step__{i + 1}"
    # stored mV / nA converted: sweep 6 reaches +71.5 mV (SOURCE.md); steps -2 nA ... +1 nA in pA
    assert rec.sweeps[5].response.max() == pytest.approx(71.5)
    assert rec.sweeps[0].command.min() == pytest.approx(-2000.0)
    assert rec.sweeps[15].command.max() == pytest.approx(1000.0, rel=1e-6)


def test_nwb_prerelease_2_0b_copy_reads_the_same(tmp_path, nwb_ref):
    copy = tmp_path / "v20b.nwb"
    shutil.copyfile(NWB_FILE, copy)
    with h5py.File(copy, "r+") as f:
        f.attrs["nwb_version"] = "2.0b"
    rec = nwb.read(copy)
    assert rec.format_version == "2.0b"
    assert rec.flags == []                             # pynwb 4.2 reads it; no fallback needed
    _assert_same_as_reference(rec, nwb_ref)


def test_nwb_h5py_fallback_when_pynwb_refuses(monkeypatch, nwb_ref):
    def refuse(*a, **k):
        raise ValueError("unsupported schema version '2.0b'")

    monkeypatch.setattr(pynwb, "NWBHDF5IO", refuse)
    rec = nwb.read(NWB_FILE)
    assert len(rec.flags) == 1 and rec.flags[0].startswith("read_with_h5py: pynwb could not read the file")
    assert "unsupported schema version" in rec.flags[0]
    _assert_same_as_reference(rec, nwb_ref)
    assert [s.clamp_mode for s in rec.sweeps] == [CURRENT_CLAMP] * 16
    assert rec.metadata["series"][0]["paired_by"] == "name"
    assert rec.recorded_at == dt.datetime(1999, 1, 11, 12, 43, 13, tzinfo=dt.UTC)


def test_nwb_corrupt_and_missing(tmp_path):
    data = NWB_FILE.read_bytes()
    cut = tmp_path / "cut.nwb"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptData, match="cut.nwb"):
        nwb.read(cut)
    junk = tmp_path / "junk.nwb"
    junk.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(CorruptData, match="not a readable HDF5/NWB file"):
        nwb.read(junk)
    empty = tmp_path / "empty.nwb"                     # valid HDF5, no NWB content
    with h5py.File(empty, "w") as f:
        f.create_group("acquisition")
    with pytest.raises(CorruptData, match="no intracellular series"):
        nwb.read(empty)
    with pytest.raises(NotFound):
        nwb.read(tmp_path / "absent.nwb")
