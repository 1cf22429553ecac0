"""Storage and data I/O without Ray: URIs, pair discovery, readers, grids and tiling, writers, COG/VRT/STAC, manifest.

Modules:

- ``storage, fsutil``: filesystems for every URI (local, s3://), safe key joins, atomic writes
- ``pairs``: pair discovery from folders and manifests (iter_pairs, read_pairs, check_pair_source), built on
  ``pair_rows`` (pair schema, safe ids, row validation), ``pair_manifests`` (CSV/Parquet/JSONL manifests) and
  ``pair_folders`` (sub-folder and suffix layouts)
- ``readers, geo``: lossless decoding (PNG/JPEG/TIFF/GeoTIFF) and grid alignment of a pair
- ``tiling``: tile grids with halos, seam-free stitching, nodata masks (fuse_tiled)
- ``writers, cog, stac``: fused PNGs, COG tiles, VRT mosaics, STAC items
- ``manifest, marks``: the job manifest that makes reruns resume, and the tool's mark on its outputs
"""
