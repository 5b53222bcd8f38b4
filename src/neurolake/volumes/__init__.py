"""Volumes: layer specs, tensorstore I/O, cutouts and writes at any mip, ingest, pyramids, tiles.

Reached through the client: ``lake["ds"].layer("image")`` is a :class:`neurolake.volumes.layer.Layer`
(``layer[z0:z1, y0:y1, x0:x1]``, ``layer.cutout(x=, y=, z=, mip=)``, ``layer.write(array, x0=, y0=, z0=)``;
arrays are numpy (z, y, x)). Nothing is imported here, so importing a submodule stays cheap.
"""
