"""Storage and data I/O without Ray: URIs, pair discovery, readers, grids and tiling, writers, COG/VRT/STAC, manifest.

Modules:

- ``storage, fsutil``: filesystems for every URI (local, s3://), safe key joins, atomic writes
- ``pairs``: pair discovery from folders and manifests (iter_pairs, read_pairs, check_pair_source), built on
  ``pair_rows`` (pair schema, safe ids, row validation), ``pair_manifests`` (CSV/Parquet/JSONL manifests) and
  ``pair_folders`` (sub-folder and suffix layouts)
- ``readers``, ``fetch``: lossless decoding (PNG/JPEG/BMP/TIFF/GeoTIFF) behind guarded, bounded fetches
- ``geo``, ``decode``: grid planning of a pair, and decode_pair (both images read, grids checked or aligned)
- ``tiling``: tile grids with halos, seam-free stitching, nodata masks (fuse_tiled)
- ``writers, cog, stac``: fused PNGs, COG tiles, VRT mosaics, STAC items
- ``manifest, marks, done_set``: the job manifest that makes reruns resume, the tool's mark on its outputs, and the
  compact set of done pair ids a rerun holds
"""
