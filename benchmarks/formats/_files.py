"""MATLAB and Excel label files, read with scipy.io, openpyxl (.xlsx) and xlrd (.xls);
and the check every label file gets first: not empty, not an HTML page, text if text."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError

TEXT_SUFFIXES = {".csv", ".txt", ".json", ".jpgl", ".tsv"}
SNIFF_BYTES = 4096


def check_download(path: Path, text: bool | None = None) -> Path:
    """Refuse what a failed or cut download leaves under a label file's name: an empty
    file, an HTML page (an error page saved by a browser or `wget`), or, for a text
    format, binary data. `text=None`: by the file's suffix."""
    text = path.suffix.lower() in TEXT_SUFFIXES if text is None else text
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if not head:
        raise UserError(f"{path}: the file is empty (0 bytes); re-download it")
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        raise UserError(f"{path}: this is an HTML page (an error page saved under the file's "
                        "name, a failed download), not the label file; re-download it")
    if text:
        try:
            chars = head.decode("utf-8")
        except UnicodeDecodeError as exc:  # a cut at the end may split one character
            chars = head[:exc.start].decode("utf-8") if exc.start > len(head) - 4 else None
        printable = chars is not None and "\x00" not in chars and \
            sum(c.isprintable() or c in "\t\r\n" for c in chars) >= 0.95 * len(chars)
        if not printable:
            raise UserError(f"{path}: binary data where a text file is expected (a broken or "
                            "wrong download); re-download it")
    return path


def dataset_file(root: Path, rel: str, what: str) -> Path:
    path = root / rel
    if not path.is_file():
        raise UserError(f"{path} not found: {what} ships it; set `root` to the folder the "
                        "dataset unpacks to")
    return check_download(path)


def mat_variable(path: Path, name: str) -> np.ndarray:
    """One variable of a MATLAB v5 file, flattened (1×N and N×1 alike)."""
    import scipy.io

    check_download(path, text=False)
    try:
        data = scipy.io.loadmat(path)
    except Exception as exc:  # MatReadError, IndexError, ValueError, ...: not a .mat file
        raise UserError(f"{path}: cannot read as a MATLAB file ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
                        "re-download it") from None
    if name not in data:
        found = sorted(k for k in data if not k.startswith("__"))
        raise UserError(f"{path}: no variable '{name}' (it has {found}); this is not the "
                        "dataset's own file, or a different release of it")
    return np.asarray(data[name]).reshape(-1)


def mat_strings(path: Path, name: str) -> list[str]:
    """A MATLAB cell array of strings (each cell a 1-element char array)."""
    out = []
    for cell in mat_variable(path, name):
        value = np.asarray(cell).reshape(-1)
        out.append(str(value[0]).strip() if value.size else "")
    return out


def mat_numbers(path: Path, name: str) -> np.ndarray:
    values = mat_variable(path, name)
    try:
        return values.astype(np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{path}: variable '{name}' does not hold numbers") from None


def same_length(path: Path, arrays: dict[str, object]) -> None:
    """Variables that describe the same images must have one entry each."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise UserError(f"{path}: the arrays have different lengths {lengths}; they must "
                        "list the same images: re-download the dataset's label files")


def sheet_rows(path: Path, sheet: str | None = None) -> list[list]:
    """Every row of an Excel sheet (.xlsx via openpyxl, .xls via xlrd), cells as values."""
    check_download(path, text=False)
    try:
        if path.suffix.lower() == ".xls":
            import xlrd

            book = xlrd.open_workbook(path)
            names = book.sheet_names()
            ws = book.sheet_by_name(sheet) if sheet in names else None
            if sheet is None:
                ws = book.sheet_by_index(0)
            if ws is None:
                raise KeyError(sheet)
            return [ws.row_values(r) for r in range(ws.nrows)]
        import openpyxl

        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        names = book.sheetnames
        if sheet is not None and sheet not in names:
            raise KeyError(sheet)
        ws = book[sheet] if sheet else book.worksheets[0]
        rows = [list(r) for r in ws.iter_rows(values_only=True)]
        book.close()
        return rows
    except KeyError:
        raise UserError(f"{path}: no sheet '{sheet}' (sheets: {names}); this is not the "
                        "dataset's own label file") from None
    except UserError:
        raise
    except Exception as exc:  # xlrd.XLRDError, zipfile.BadZipFile, ...
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise UserError(f"{path}: cannot read as an Excel file ({type(exc).__name__}: "
                        f"{detail}); re-download it") from None


def header_table(path: Path, rows: list[list], wanted: list[str], sheet: str = "",
                 scan: int = 30) -> tuple[int, dict[str, int]]:
    """The header row (found, not assumed to be the first) and each wanted column's index."""
    for r, row in enumerate(rows[:scan]):
        cells = [str(c).strip().lower() if c is not None else "" for c in row]
        if all(w.lower() in cells for w in wanted):
            return r, {w: cells.index(w.lower()) for w in wanted}
    where = f"sheet '{sheet}'" if sheet else "the first sheet"
    raise UserError(f"{path}: no row in the first {scan} of {where} has the header "
                    f"columns {wanted}; this is not the dataset's own label file")


def cell_text(value) -> str:
    """A cell as text; Excel stores names like `1600` as the number 1600.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value).strip()


def cell_number(path: Path, value, row: int, column: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise UserError(f"{path}, row {row}: {column} '{value}' is not a number; fix or "
                        "remove that row")
    return number
