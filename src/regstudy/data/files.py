"""Reading a data file: whatever fails becomes one :class:`DataFileError` naming the file
and what is wrong with it, so that a job refuses it with exit code 2 and one line.

Left alone, each library says it in its own words, some misleading: numpy calls a file
that is not a zip archive "pickled", zipfile calls a truncated ``.npz`` "not a zip file",
and a Latin-1 CSV file is a ``UnicodeDecodeError`` at an offset into pandas' buffer. CSV
files are read by :mod:`.tabular` (its :class:`CsvError` is a DataFileError).
"""

from __future__ import annotations

import contextlib
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive of .npy files
NPY_MAGIC = b"\x93NUMPY"


class DataFileError(ValueError):
    """A data file that cannot be used: the message names the file and what is wrong."""


def unreadable(path: Path, e: OSError, error: type[DataFileError] = DataFileError) -> DataFileError:
    """The error for a data file the system will not read (a folder, no permission)."""
    return error(f"data file {path} cannot be read: {e.strerror or e}")


@contextlib.contextmanager
def open_npz(path: str | os.PathLike):
    """``np.load(path)`` (pickles refused), with every failure while it is read (the
    ``with`` block included: arrays are read lazily) a DataFileError naming the file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as e:
        raise unreadable(path, e) from None
    if not head.startswith(ZIP_MAGIC):
        what = ("is empty" if not head else "is a single .npy array, not an .npz archive of them"
                if head == NPY_MAGIC else f"is not an .npz file: not a zip archive (it starts with {head!r})")
        raise DataFileError(f"data file {path} {what}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            yield npz
    except DataFileError:
        raise
    except zipfile.BadZipFile as e:
        why = ("its end, the archive's directory, is missing: the file was cut short"
               if "not a zip file" in str(e) else str(e))
        raise DataFileError(f"data file {path} is truncated or damaged: {why}") from None
    except (EOFError, zlib.error) as e:
        raise DataFileError(f"data file {path} is truncated or damaged: an array is cut short ({e})") from None
    except KeyError as e:
        raise DataFileError(f"data file {path} has no array {e}") from None
    except OSError as e:
        raise unreadable(path, e) from None
    except ValueError as e:
        why = ("it holds pickled Python objects (object arrays), which are never loaded: unpickling "
               "can run any code" if "allow_pickle" in str(e) or "pickled" in str(e) else str(e))
        raise DataFileError(f"data file {path} cannot be used: {why}") from None
    except Exception as e:  # noqa: BLE001 - whatever else: still one message naming the file
        raise DataFileError(f"data file {path} cannot be read as an .npz file: {type(e).__name__}: {e}") from None
