"""Reading and decoding images from any URI, lossless in bit depth, bands and georeferencing.

The format is sniffed from the first bytes, never trusted from the extension: PNG, JPEG and BMP are decoded by
Pillow (``LOAD_TRUNCATED_IMAGES`` is left False and every image is ``load()``-ed, so a truncated file fails
instead of coming back grey-padded), 16-bit colour PNGs and every TIFF by rasterio/GDAL, which keeps 8/16-bit
integers, int16, float32, any number of bands, nodata, CRS, transform and band descriptions. TIFFs are opened
lazily (local path, ``/vsis3/`` or an s3fs file object), so :func:`read_window` fetches only the bytes of the
window.

Every failure is a :class:`~pipeline.errors.RasterReadError` naming the URI and what was expected. Arrays are
``(H, W, C)``; ``meta`` is a JSON-ready dict: ``format, driver, dtype, count, height, width, nodata, crs,
transform, descriptions, colorinterp, mode, bytes, uri``. A NaN nodata is stored as the string ``"nan"``
(strict JSON has no NaN): use :func:`nodata_value` to read it back.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from pipeline.config.io_config import ReadConfig, StorageConfig
from pipeline.errors import GridError, RasterReadError
from pipeline.io.fetch import (
    _bounded,
    _check_dtype,
    _check_not_empty,
    _check_object,
    _error_text,
    _fetch,
    sniff_format,
)
from pipeline.io.radiometry import nodata_value
from pipeline.io.storage import (
    gdal_path,
    get_filesystem,
    is_s3,
    rasterio_env,
)

__all__ = [
    "PLAIN_SUFFIXES",
    "nodata_value",
    "open_raster",
    "read_image",
    "read_meta",
    "read_window",
    "sniff_format",
]

logger = logging.getLogger(__name__)

PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
"""Names of plain images: never planned as scenes (:mod:`pipeline.fuse.scene_plan`), so no header is read for them
before decoding."""

# ------------------------------------------------------------------------------------------------------------
# Plain images (Pillow)
# ------------------------------------------------------------------------------------------------------------


def _png_is_16bit_colour(data: bytes) -> bool:
    # IHDR: bytes 24 (bit depth) and 25 (colour type: 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA).
    return len(data) > 25 and data[24] == 16 and data[25] in (2, 4, 6)


def _pillow_array(image: Any, uri: str) -> np.ndarray:
    mode = image.mode
    if mode == "1":
        image = image.convert("L")
    elif mode == "LA":
        # Grey + alpha: as RGBA with three equal channels, which maugif_core treats as grey (SPEC 1.1), alpha kept.
        image = image.convert("RGBA")
    elif mode in ("P", "PA"):
        image = image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        array = array.astype(np.uint16, copy=False)
    elif image.mode == "I":  # 16-bit grey PNG on older Pillow
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise RasterReadError(f"{uri}: unsupported 32-bit integer image: expected 8 or 16 bits per sample")
        array = array.astype(np.uint16)
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array)


def _decode_pillow(uri: str, data: bytes, fmt: str, config: ReadConfig) -> tuple[np.ndarray, dict]:
    from PIL import Image, ImageFile, ImageOps

    if fmt == "PNG" and b"IEND" not in data[-64:]:
        # Pillow stops once the pixels are decoded, so a file cut inside its last chunk still "loads".
        raise RasterReadError(f"{uri}: truncated PNG: no IEND chunk at the end of {len(data)} bytes")

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logger.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process: truncated files may pass")
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:
            if image.width * image.height > config.max_pixels:
                raise RasterReadError(
                    f"{uri}: {image.height}x{image.width} exceeds max_pixels={config.max_pixels}: "
                    "expected a smaller image (plain formats cannot be read by window)"
                )
            image.load()
            mode = image.mode
            # Cameras store rotated JPEG/TIFF pixels plus an EXIF orientation tag; viewers and the partner image
            # follow the tag, so apply it (a no-op without one).
            image = ImageOps.exif_transpose(image)
            array = _pillow_array(image, uri)
    except RasterReadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise RasterReadError(f"{uri}: corrupt or truncated {fmt}: {type(e).__name__}: {e}") from e
    _check_dtype(uri, array.dtype.name, config)
    meta = _base_meta(uri, fmt, "Pillow", array, len(data))
    meta["mode"] = mode
    return array, meta


def _base_meta(uri: str, fmt: str, driver: str, array: np.ndarray, size: int | None) -> dict[str, Any]:
    height, width, count = array.shape
    return {
        "format": fmt,
        "driver": driver,
        "dtype": array.dtype.name,
        "count": count,
        "height": height,
        "width": width,
        "nodata": None,
        "crs": None,
        "transform": None,
        "descriptions": [None] * count,
        "colorinterp": None,
        "mode": None,
        "bytes": size,
        "uri": uri,
    }


# ------------------------------------------------------------------------------------------------------------
# Rasters (rasterio / GDAL)
# ------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_raster(
    uri: str,
    *,
    config: ReadConfig | None = None,
    storage: StorageConfig | None = None,
    data: bytes | None = None,
) -> Iterator[Any]:
    """Open ``uri`` with rasterio (lazily: no pixels are read), in a GDAL environment fit for it.

    Local files open by path; ``s3://`` through ``/vsis3/`` (``config.s3_access="gdal"``) or through an s3fs
    file object (``"fsspec"``, default) so reads are HTTP range requests either way. ``data`` opens in-memory
    bytes.

    Raises:
        RasterReadError: the file is missing, unreachable or not a raster GDAL can open.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    config = config or ReadConfig()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            if data is not None:
                stack.enter_context(rasterio_env())
                dataset = stack.enter_context(stack.enter_context(MemoryFile(data)).open())
            elif is_s3(uri) and config.s3_access == "gdal":
                stack.enter_context(rasterio_env(uri, storage))
                dataset = stack.enter_context(rasterio.open(gdal_path(uri)))
            elif is_s3(uri):
                fs, path = get_filesystem(uri, storage)
                stack.enter_context(rasterio_env())
                dataset = stack.enter_context(rasterio.open(path, opener=fs))
            else:
                stack.enter_context(rasterio_env())
                dataset = stack.enter_context(rasterio.open(gdal_path(uri)))
        except Exception as e:  # GDAL reports bad files as several types (RasterioIOError, CPLE_*)
            raise RasterReadError(f"{_error_text(uri, e)} (expected a readable TIFF/GeoTIFF)") from e
        yield dataset


def _raster_meta(uri: str, dataset: Any, fmt: str, size: int | None) -> dict[str, Any]:
    dtypes = set(dataset.dtypes)
    if len(dtypes) != 1:
        raise RasterReadError(f"{uri}: bands of mixed dtypes {sorted(dtypes)}: expected one dtype for all bands")
    crs = dataset.crs.to_string() if dataset.crs else None
    transform = [float(v) for v in tuple(dataset.transform)[:6]]
    georeferenced = crs is not None or transform != [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    nodata = dataset.nodata
    return {
        "format": fmt,
        "driver": dataset.driver,
        "dtype": dataset.dtypes[0],
        "count": dataset.count,
        "height": dataset.height,
        "width": dataset.width,
        "nodata": None if nodata is None else ("nan" if math.isnan(nodata) else float(nodata)),
        "crs": crs,
        "transform": transform if georeferenced else None,
        "descriptions": list(dataset.descriptions),
        "colorinterp": [ci.name for ci in dataset.colorinterp],
        "mode": None,
        "bytes": size,
        "uri": uri,
        "datetime": dataset.tags().get("TIFFTAG_DATETIME"),  # acquisition time for STAC (pipeline.io.stac parses it)
    }


def _to_hwc(bands: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(bands, 0, -1))


def _read_raster(uri: str, dataset: Any, fmt: str, config: ReadConfig, window: Any, **read_kw: Any) -> Any:
    meta = _raster_meta(uri, dataset, fmt, None)
    _check_dtype(uri, meta["dtype"], config)
    if window is None and dataset.width * dataset.height > config.max_pixels:
        raise RasterReadError(
            f"{uri}: {dataset.height}x{dataset.width} exceeds max_pixels={config.max_pixels}: read it by window"
        )
    try:
        bands = dataset.read(window=window, **read_kw)
    except Exception as e:
        raise RasterReadError(f"{uri}: corrupt or truncated {fmt} pixel data: {type(e).__name__}: {e}") from e
    return _to_hwc(bands), meta


def _sniff(uri: str, config: ReadConfig, storage: StorageConfig | None) -> tuple[str, int | None]:
    """(format, size) of an object that may be read (see :func:`_check_object`)."""
    size = _check_object(uri, config, storage)
    return _check_not_empty(uri, _fetch(uri, storage, head_only=True)), size


def read_meta(uri: str, *, config: ReadConfig | None = None, storage: StorageConfig | None = None) -> dict[str, Any]:
    """Header metadata of an image without decoding its pixels (plain formats are fetched, not decoded)."""
    config = config or ReadConfig()
    return _bounded(uri, config, lambda: _read_meta(uri, config, storage))


def _read_meta(uri: str, config: ReadConfig, storage: StorageConfig | None) -> dict[str, Any]:
    fmt, size = _sniff(uri, config, storage)
    if fmt == "TIFF":
        with open_raster(uri, config=config, storage=storage) as dataset:
            meta = _raster_meta(uri, dataset, fmt, size)
        _check_dtype(uri, meta["dtype"], config)
        return meta
    return _read_image(uri, config, storage)[1]


def read_image(
    uri: str, *, config: ReadConfig | None = None, storage: StorageConfig | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a whole image.

    Args:
        uri: Local path, ``file://`` or ``s3://`` URI of a PNG, JPEG, BMP or TIFF/GeoTIFF (any extension).
        config: Decoding settings (allowed dtypes, size limit, S3 access mode).
        storage: Object-storage settings.

    Returns:
        ``(image, meta)``: ``image`` is ``(H, W, C)`` in the file's dtype (uint8, uint16, int16 or float32);
        ``meta`` is a JSON-ready dict (see the module docstring).

    Raises:
        RasterReadError: missing/unreachable file, empty, truncated or corrupt data, unsupported dtype,
            too large.
    """
    config = config or ReadConfig()
    return _bounded(uri, config, lambda: _read_image(uri, config, storage))


def _read_image(uri: str, config: ReadConfig, storage: StorageConfig | None) -> tuple[np.ndarray, dict[str, Any]]:
    fmt, size = _sniff(uri, config, storage)
    if fmt == "TIFF":
        with open_raster(uri, config=config, storage=storage) as dataset:
            image, meta = _read_raster(uri, dataset, fmt, config, None)
        meta["bytes"] = size
        return image, meta
    data = _fetch(uri, storage, size=size, limit=config.max_object_bytes)
    if fmt == "PNG" and _png_is_16bit_colour(data):
        with open_raster(uri, config=config, storage=storage, data=data) as dataset:
            image, meta = _read_raster(uri, dataset, fmt, config, None)
        meta.update(transform=None, crs=None, bytes=len(data))
        return image, meta
    return _decode_pillow(uri, data, fmt, config)


def _as_window(window: Any) -> Any:
    from rasterio.windows import Window

    if isinstance(window, Window):
        return window
    if all(hasattr(window, a) for a in ("row_off", "col_off", "height", "width")):
        return Window(window.col_off, window.row_off, window.width, window.height)
    row_off, col_off, height, width = window
    return Window(col_off, row_off, width, height)


def read_window(
    uri: str,
    window: Any,
    *,
    config: ReadConfig | None = None,
    storage: StorageConfig | None = None,
    boundless: bool = False,
    fill_value: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a rectangle of an image: only its bytes for (Geo)TIFFs; a decode-then-slice for plain formats.

    Args:
        uri: As for :func:`read_image`.
        window: ``(row_off, col_off, height, width)``, a ``rasterio.windows.Window`` or any object with
            ``row_off``, ``col_off``, ``height``, ``width`` attributes (e.g. ``pipeline.io.tiling.Window``).
        boundless: Allow a window that extends past the image; outside pixels get ``fill_value`` (default: the
            nodata value, else 0).

    Returns:
        ``(image, meta)`` with ``image`` ``(height, width, C)``; ``meta`` describes the whole image, plus
        ``window`` (dict) and ``window_transform`` (6 floats, georeferenced rasters only).

    Raises:
        GridError: the window is empty or, without ``boundless``, not inside the image.
        RasterReadError: as for :func:`read_image`.
    """
    config = config or ReadConfig()
    win = _as_window(window)
    row_off, col_off, height, width = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
    if height <= 0 or width <= 0:
        raise GridError(f"{uri}: empty window {height}x{width}: expected a positive height and width")
    fmt, _ = _sniff(uri, config, storage)

    def check(full_h: int, full_w: int) -> None:
        inside = row_off >= 0 and col_off >= 0 and row_off + height <= full_h and col_off + width <= full_w
        if not inside and not boundless:
            raise GridError(
                f"{uri}: window rows {row_off}:{row_off + height}, cols {col_off}:{col_off + width} is "
                f"outside the {full_h}x{full_w} image: expected a window inside it (or boundless=True)"
            )

    if fmt == "TIFF":
        with open_raster(uri, config=config, storage=storage) as dataset:
            check(dataset.height, dataset.width)
            fill = fill_value if fill_value is not None else (dataset.nodata if dataset.nodata is not None else 0)
            kwargs = {"boundless": True, "fill_value": fill} if boundless else {}
            image, meta = _read_raster(uri, dataset, fmt, config, win, **kwargs)
            if meta["transform"] is not None:
                meta["window_transform"] = [float(v) for v in tuple(dataset.window_transform(win))[:6]]
    else:
        full, meta = read_image(uri, config=config, storage=storage)
        check(meta["height"], meta["width"])
        fill = fill_value if fill_value is not None else 0
        image = np.full((height, width, full.shape[2]), fill, dtype=full.dtype)
        r0, c0 = max(row_off, 0), max(col_off, 0)
        r1, c1 = min(row_off + height, full.shape[0]), min(col_off + width, full.shape[1])
        if r1 > r0 and c1 > c0:
            image[r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = full[r0:r1, c0:c1]
    meta["window"] = {"row_off": row_off, "col_off": col_off, "height": height, "width": width}
    return image, meta
