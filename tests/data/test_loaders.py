"""Tests for ``llmrec_gen.data``: every loader format, the built-in ML-100k, bad inputs, TrainData.

Every file is built by the tests in ``tmp_path`` from one small logical dataset (``ITEMS`` and
``RATINGS``), written in each supported format, so each loader must produce the same canonical
:class:`Dataset`.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec_gen.data import Dataset, TrainData, load_dataset, load_recbole
from llmrec_gen.errors import DataError, UnknownUserError

# (item_id, title without year, year, genres). Latin-1-representable accents on purpose: the
# GroupLens 100k/1M files are latin-1. Item 5 has no interactions (must stay in the catalog).
ITEMS = [
    (1, "Toy Story", 1995, "Animation|Comedy"),
    (2, "Café Society", 2016, "Drama|Romance"),
    (3, "Amélie", 2001, "Comedy"),
    (4, "Grumpier Old Men, The", 1995, "Comedy|Romance"),
    (5, "Unwatched Film", 1990, "Drama"),
]
# (user_id, item_id, rating, timestamp), in file order (not sorted by time).
RATINGS = [
    (1, 1, 5, 874965758),
    (1, 2, 3, 874965700),
    (2, 1, 4, 888550871),
    (2, 3, 2, 888550872),
    (3, 4, 1, 890000000),
]
ML_GENRES = (
    "unknown|Action|Adventure|Animation|Children's|Comedy|Crime|Documentary|Drama|Fantasy|"
    "Film-Noir|Horror|Musical|Mystery|Romance|Sci-Fi|Thriller|War|Western"
).split("|")


def expected_interactions() -> pd.DataFrame:
    """The canonical interactions of ``RATINGS``: sorted by user, then time."""
    frame = pd.DataFrame(RATINGS, columns=["user_id", "item_id", "rating", "timestamp"])
    frame = frame.astype({"rating": "float64", "timestamp": "int64"})
    return frame.sort_values(["user_id", "timestamp"]).reset_index(drop=True)


def expected_catalog() -> pd.DataFrame:
    """The canonical catalog of ``ITEMS``."""
    return pd.DataFrame(
        {
            "item_id": [i for i, *_ in ITEMS],
            "title": [t for _, t, _, _ in ITEMS],
            "year": pd.array([y for *_, y, _ in ITEMS], dtype="Int64"),
            "genres": [g for *_, g in ITEMS],
            "text": [f"{t} ({y}) | {g.replace('|', ', ')}" for _, t, y, g in ITEMS],
        }
    )


# ---------------------------------------------------------------------------------------------
# Writers: one per supported format


def write_ml100k(directory: Path) -> Path:
    """GroupLens ML-100k: tab-separated ``u.data``, latin-1 ``u.item`` with 19 genre flags."""
    directory.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS)
    (directory / "u.data").write_text(data, encoding="ascii")
    lines = []
    for item_id, title, year, genres in ITEMS:
        flags = "|".join("1" if g in genres.split("|") else "0" for g in ML_GENRES)
        url = "http://us.imdb.com/M/title-exact?x"
        lines.append(f"{item_id}|{title} ({year})|01-Jan-{year}||{url}|{flags}\n")
    (directory / "u.item").write_bytes("".join(lines).encode("latin-1"))
    return directory


def write_ml1m(directory: Path) -> Path:
    """GroupLens ML-1M: ``::``-separated, latin-1 ``movies.dat``."""
    directory.mkdir(parents=True, exist_ok=True)
    ratings = "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in RATINGS)
    (directory / "ratings.dat").write_text(ratings, encoding="ascii")
    movies = "".join(f"{i}::{t} ({y})::{g}\n" for i, t, y, g in ITEMS)
    (directory / "movies.dat").write_bytes(movies.encode("latin-1"))
    return directory


def write_latest(directory: Path) -> Path:
    """GroupLens latest-small: CSV with headers, utf-8, quoted titles containing commas."""
    directory.mkdir(parents=True, exist_ok=True)
    ratings = "userId,movieId,rating,timestamp\n"
    ratings += "".join(f"{u},{i},{r}.0,{t}\n" for u, i, r, t in RATINGS)
    (directory / "ratings.csv").write_text(ratings, encoding="utf-8")
    movies = "movieId,title,genres\n" + "".join(f'{i},"{t} ({y})",{g}\n' for i, t, y, g in ITEMS)
    (directory / "movies.csv").write_text(movies, encoding="utf-8")
    return directory


def write_recbole(directory: Path, name: str = "toy") -> Path:
    """RecBole atomic files: typed TSV headers, space-separated genre tokens."""
    directory.mkdir(parents=True, exist_ok=True)
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    inter += "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS)
    (directory / f"{name}.inter").write_text(inter, encoding="utf-8")
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    item += "".join(f"{i}\t{t}\t{y}\t{g.replace('|', ' ')}\n" for i, t, y, g in ITEMS)
    (directory / f"{name}.item").write_text(item, encoding="utf-8")
    return directory


def write_generic_csv(directory: Path) -> Path:
    """The generic pair ``interactions.csv`` + ``items.csv``."""
    directory.mkdir(parents=True, exist_ok=True)
    inter = "user_id,item_id,rating,timestamp\n"
    inter += "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in RATINGS)
    (directory / "interactions.csv").write_text(inter, encoding="utf-8")
    items = "item_id,title,year,genres\n" + "".join(f'{i},"{t}",{y},{g}\n' for i, t, y, g in ITEMS)
    (directory / "items.csv").write_text(items, encoding="utf-8")
    return directory


def write_generic_parquet(directory: Path) -> Path:
    """The generic pair as parquet, with native (non-string) column types."""
    directory.mkdir(parents=True, exist_ok=True)
    inter = pd.DataFrame(RATINGS, columns=["user_id", "item_id", "rating", "timestamp"])
    inter.astype({"rating": "float64"}).to_parquet(directory / "interactions.parquet")
    items = pd.DataFrame(ITEMS, columns=["item_id", "title", "year", "genres"])
    items.to_parquet(directory / "items.parquet")
    return directory


def zip_directory(directory: Path, zip_path: Path) -> Path:
    """Zip ``directory``'s files under a top folder, as GroupLens ships them."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr(f"{directory.name}/", "")
        for file in sorted(directory.iterdir()):
            zf.write(file, f"{directory.name}/{file.name}")
    return zip_path


Writer = Callable[[Path], Path]
FORMATS: dict[str, Writer] = {
    "ml-100k-dir": write_ml100k,
    "ml-1m-dir": write_ml1m,
    "ml-latest-small-dir": write_latest,
    "recbole-dir": write_recbole,
    "generic-csv-dir": write_generic_csv,
    "generic-parquet-dir": write_generic_parquet,
}
ZIPPED: dict[str, Writer] = {
    "ml-100k-zip": write_ml100k,
    "ml-1m-zip": write_ml1m,
    "ml-latest-small-zip": write_latest,
}


def build(tmp_path: Path, fmt: str) -> Path:
    """Write ``fmt`` under ``tmp_path`` and return what to pass to ``load_dataset``."""
    if fmt in ZIPPED:
        source = ZIPPED[fmt](tmp_path / "src" / fmt.removesuffix("-zip"))
        return zip_directory(source, tmp_path / f"{fmt.removesuffix('-zip')}.zip")
    return FORMATS[fmt](tmp_path / fmt)


def load_error(source: str | Path) -> str:
    """The message of the :class:`DataError` that loading ``source`` raises (must be one line)."""
    with pytest.raises(DataError) as info:
        load_dataset(source)
    message = str(info.value)
    assert "\n" not in message
    return message


def write_pair(tmp_path: Path, interactions: str | bytes, items: str | bytes) -> Path:
    """A generic dataset directory from raw file contents."""
    directory = tmp_path / "pair"
    directory.mkdir()
    for name, content in (("interactions.csv", interactions), ("items.csv", items)):
        raw = content.encode("utf-8") if isinstance(content, str) else content
        (directory / name).write_bytes(raw)
    return directory


ITEMS_CSV = "item_id,title\n1,A\n2,B\n"


# ---------------------------------------------------------------------------------------------
# Every format -> one canonical form


@pytest.mark.parametrize("fmt", [*FORMATS, *ZIPPED])
def test_loader_reads_the_canonical_interactions(tmp_path: Path, fmt: str) -> None:
    dataset = load_dataset(build(tmp_path, fmt))
    pd.testing.assert_frame_equal(dataset.interactions, expected_interactions())


@pytest.mark.parametrize("fmt", [*FORMATS, *ZIPPED])
def test_loader_reads_the_canonical_catalog(tmp_path: Path, fmt: str) -> None:
    dataset = load_dataset(build(tmp_path, fmt))
    pd.testing.assert_frame_equal(dataset.catalog, expected_catalog(), check_dtype=False)
    assert dataset.catalog["item_id"].dtype == np.int64
    assert dataset.catalog["year"].dtype == "Int64"


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        ("ml-100k-dir", "ml-100k-dir"),
        ("ml-100k-zip", "ml-100k"),
        ("recbole-dir", "toy"),
        ("generic-csv-dir", "generic-csv-dir"),
    ],
)
def test_dataset_name_comes_from_the_directory_zip_or_atomic_files(
    tmp_path: Path, fmt: str, name: str
) -> None:
    assert load_dataset(build(tmp_path, fmt)).name == name


def test_ml100k_decodes_latin1_titles(tmp_path: Path) -> None:
    catalog = load_dataset(write_ml100k(tmp_path / "ml")).catalog
    assert "Café Society" in catalog["title"].tolist()


def test_ml100k_unknown_genre_flag_means_no_genre(tmp_path: Path) -> None:
    directory = write_ml100k(tmp_path / "ml")
    flags = "|".join(["1"] + ["0"] * 18)
    with (directory / "u.item").open("a", encoding="latin-1") as f:
        f.write(f"6|unknown|||http://x|{flags}\n")
    catalog = load_dataset(directory).catalog.set_index("item_id")
    assert catalog.loc[6, "genres"] == ""
    assert pd.isna(catalog.loc[6, "year"])


def test_ml100k_year_falls_back_to_release_date(tmp_path: Path) -> None:
    directory = write_ml100k(tmp_path / "ml")
    flags = "|".join(["0"] * 8 + ["1"] + ["0"] * 10)
    with (directory / "u.item").open("a", encoding="latin-1") as f:
        f.write(f"6|Untitled|14-Feb-1977||http://x|{flags}\n")
    catalog = load_dataset(directory).catalog.set_index("item_id")
    assert catalog.loc[6, "year"] == 1977
    assert catalog.loc[6, "title"] == "Untitled"


def test_ml1m_skips_blank_lines_and_counts_them_in_line_numbers(tmp_path: Path) -> None:
    directory = write_ml1m(tmp_path / "ml")
    (directory / "ratings.dat").write_text("1::1::5::1\n\n1::2::5\n", encoding="ascii")
    assert load_error(directory) == "ratings.dat: line 3: expected 4 '::' fields, got 3"


def test_latest_small_no_genres_listed_becomes_empty(tmp_path: Path) -> None:
    directory = write_latest(tmp_path / "ml")
    with (directory / "movies.csv").open("a", encoding="utf-8") as f:
        f.write("6,Nothing Known (2010),(no genres listed)\n")
    catalog = load_dataset(directory).catalog.set_index("item_id")
    assert catalog.loc[6, "genres"] == ""
    assert catalog.loc[6, "text"] == "Nothing Known (2010)"


def test_zip_with_files_at_top_level_loads(tmp_path: Path) -> None:
    source = write_ml1m(tmp_path / "src")
    zip_path = tmp_path / "flat.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for file in source.iterdir():
            zf.write(file, file.name)
    assert len(load_dataset(zip_path).interactions) == len(RATINGS)


def test_load_recbole_reads_named_atomic_files(tmp_path: Path) -> None:
    directory = write_recbole(tmp_path / "atomic", name="mydata")
    dataset = load_recbole(directory, name="mydata")
    assert dataset.name == "mydata"
    assert len(dataset.interactions) == len(RATINGS)


def test_generic_interactions_file_path_finds_items_beside_it(tmp_path: Path) -> None:
    directory = write_generic_csv(tmp_path / "g")
    dataset = load_dataset(directory / "interactions.csv")
    pd.testing.assert_frame_equal(dataset.interactions, expected_interactions())


def test_generic_rating_column_is_optional(tmp_path: Path) -> None:
    directory = write_pair(tmp_path, "user_id,item_id,timestamp\n1,1,10\n1,2,20\n", ITEMS_CSV)
    assert load_dataset(directory).interactions["rating"].tolist() == [1.0, 1.0]


def test_generic_text_column_is_kept(tmp_path: Path) -> None:
    items = "item_id,title,text\n1,A,a long description\n"
    directory = write_pair(tmp_path, "user_id,item_id,timestamp\n1,1,10\n", items)
    assert load_dataset(directory).catalog["text"].tolist() == ["a long description"]


def test_generic_iso_date_timestamps_become_epoch_seconds(tmp_path: Path) -> None:
    inter = "user_id,item_id,timestamp\n1,1,2020-01-01\n1,2,2020-01-02T10:00:00Z\n"
    directory = write_pair(tmp_path, inter, ITEMS_CSV)
    assert load_dataset(directory).interactions["timestamp"].tolist() == [1577836800, 1577959200]


def test_generic_parquet_datetime_timestamps_become_epoch_seconds(tmp_path: Path) -> None:
    directory = tmp_path / "pq"
    directory.mkdir()
    when = pd.to_datetime(["2020-01-01 00:00:00", "2020-01-02 10:00:00"])
    pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": when}).to_parquet(
        directory / "interactions.parquet"
    )
    pd.DataFrame({"item_id": [1, 2], "title": ["A", "B"]}).to_parquet(directory / "items.parquet")
    assert load_dataset(directory).interactions["timestamp"].tolist() == [1577836800, 1577959200]


def test_generic_parquet_missing_genres_and_year_are_empty(tmp_path: Path) -> None:
    directory = tmp_path / "pq"
    directory.mkdir()
    pd.DataFrame({"user_id": [1], "item_id": [1], "timestamp": [5]}).to_parquet(
        directory / "interactions.parquet"
    )
    items = pd.DataFrame({"item_id": [1], "title": ["A"], "year": [np.nan], "genres": [None]})
    items.to_parquet(directory / "items.parquet")
    catalog = load_dataset(directory).catalog
    assert catalog["genres"].tolist() == [""]
    assert catalog["year"].isna().all()
    assert catalog["text"].tolist() == ["A"]


def test_csv_with_utf8_bom_reads_the_first_column(tmp_path: Path) -> None:
    inter = "\ufeffuser_id,item_id,timestamp\n1,1,10\n".encode()
    directory = write_pair(tmp_path, inter, ITEMS_CSV)
    assert load_dataset(directory).interactions["user_id"].tolist() == [1]


def test_string_ids_like_asins_stay_strings(tmp_path: Path) -> None:
    inter = "user_id,item_id,rating,timestamp\nA3SGXH7AUHU8GW,B00005JNOG,5,10\n"
    items = "item_id,title\nB00005JNOG,Some Product\nB0000AQS0F,Other Product\n"
    dataset = load_dataset(write_pair(tmp_path, inter, items))
    assert dataset.interactions["item_id"].tolist() == ["B00005JNOG"]
    assert dataset.interactions["user_id"].tolist() == ["A3SGXH7AUHU8GW"]
    assert dataset.catalog["item_id"].tolist() == ["B00005JNOG", "B0000AQS0F"]


def test_numeric_asins_with_leading_zeros_stay_distinct_strings(tmp_path: Path) -> None:
    inter = "user_id,item_id,timestamp\n1,0001,10\n1,1,20\n"
    items = "item_id,title\n0001,Book\n1,Other Book\n"
    dataset = load_dataset(write_pair(tmp_path, inter, items))
    assert dataset.catalog["item_id"].tolist() == ["0001", "1"]
    assert dataset.interactions["item_id"].tolist() == ["0001", "1"]


def test_path_object_named_like_a_builtin_loads_the_local_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_ml1m(tmp_path / "ml-100k")
    monkeypatch.chdir(tmp_path)
    assert len(load_dataset(Path("ml-100k")).interactions) == len(RATINGS)


def test_interactions_are_sorted_by_user_then_time(tmp_path: Path) -> None:
    inter = load_dataset(write_generic_csv(tmp_path / "g")).interactions
    assert inter.equals(inter.sort_values(["user_id", "timestamp"]).reset_index(drop=True))


# ---------------------------------------------------------------------------------------------
# Dataset.info


def test_info_reports_counts_density_and_time_range(tmp_path: Path) -> None:
    info = load_dataset(write_generic_csv(tmp_path / "g")).info()
    assert info == {
        "dataset": "g",
        "users": 3,
        "items": 5,
        "items_with_interactions": 4,
        "interactions": 5,
        "density": 5 / 15,
        "ratings": "1..5",
        "time_from": "1997-09-22",
        "time_to": "1998-03-15",
        "median_interactions_per_user": 2.0,
    }


# ---------------------------------------------------------------------------------------------
# Built-in ML-100k


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    return load_dataset("ml-100k")


def test_builtin_ml100k_has_the_published_counts(ml100k: Dataset) -> None:
    info = ml100k.info()
    assert (info["users"], info["items"], info["interactions"]) == (943, 1682, 100000)


def test_builtin_ml100k_is_named_and_typed(ml100k: Dataset) -> None:
    assert ml100k.name == "ml-100k"
    assert ml100k.interactions.dtypes.astype(str).to_dict() == {
        "user_id": "int64",
        "item_id": "int64",
        "rating": "float64",
        "timestamp": "int64",
    }


def test_builtin_ml100k_catalog_has_titles_years_and_genres(ml100k: Dataset) -> None:
    toy_story = ml100k.catalog.set_index("item_id").loc[1]
    assert (toy_story["title"], toy_story["year"]) == ("Toy Story", 1995)
    assert toy_story["genres"] == "Animation|Children's|Comedy"


def test_builtin_ml100k_time_range_is_1997_to_1998(ml100k: Dataset) -> None:
    info = ml100k.info()
    assert (info["time_from"], info["time_to"]) == ("1997-09-20", "1998-04-22")


# ---------------------------------------------------------------------------------------------
# Bad inputs: DataError with a one-line message naming the file, row and column


def test_unknown_dataset_name(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert load_error(missing) == (
        f"dataset '{missing}' not found: not a built-in (ml-100k) nor a path"
    )


def test_unknown_builtin_like_name() -> None:
    assert load_error("ml-25m") == "dataset 'ml-25m' not found: not a built-in (ml-100k) nor a path"


def test_corrupt_zip(tmp_path: Path) -> None:
    path = tmp_path / "ml-1m.zip"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    assert load_error(path) == f"{path}: not a valid zip file (File is not a zip file)"


def test_zip_without_movielens_files(tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    assert load_error(path) == f"{path}: zip holds no MovieLens 100k/1M/latest-small files"


def test_zip_missing_a_member(tmp_path: Path) -> None:
    source = write_ml100k(tmp_path / "src")
    (source / "u.item").unlink()
    path = zip_directory(source, tmp_path / "ml-100k.zip")
    assert load_error(path) == f"{path}: missing 'u.item' in the archive"


def test_unrecognised_directory(tmp_path: Path) -> None:
    assert load_error(tmp_path).startswith(f"{tmp_path}: unrecognised dataset directory")


def test_generic_directory_without_items_file(tmp_path: Path) -> None:
    directory = write_generic_csv(tmp_path / "g")
    (directory / "items.csv").unlink()
    assert load_error(directory) == (
        f"{directory / 'interactions.csv'}: expected an item file 'items.csv' or "
        "'items.parquet' beside it"
    )


def test_missing_interaction_column(tmp_path: Path) -> None:
    directory = write_pair(tmp_path, "user_id,rating,timestamp\n1,5,10\n", ITEMS_CSV)
    assert load_error(directory) == "interactions.csv: missing column(s) 'item_id'"


def test_missing_timestamp_column(tmp_path: Path) -> None:
    directory = write_pair(tmp_path, "user_id,item_id\n1,1\n", ITEMS_CSV)
    assert load_error(directory) == (
        "interactions.csv: missing column 'timestamp' (needed for the split)"
    )


def test_missing_item_title_column(tmp_path: Path) -> None:
    directory = write_pair(tmp_path, "user_id,item_id,timestamp\n1,1,10\n", "item_id,name\n1,A\n")
    assert load_error(directory) == "items.csv: missing column(s) 'title'"


def test_missing_latest_small_column(tmp_path: Path) -> None:
    directory = write_latest(tmp_path / "ml")
    (directory / "ratings.csv").write_text("userId,movieId,timestamp\n1,1,10\n", encoding="utf-8")
    assert load_error(directory) == "ratings.csv: missing column(s) 'rating'"


def test_missing_recbole_item_file(tmp_path: Path) -> None:
    directory = write_recbole(tmp_path / "atomic")
    (directory / "toy.item").unlink()
    assert load_error(directory) == f"{directory / 'toy.item'}: file not found"


def test_duplicate_item_ids_name_the_row(tmp_path: Path) -> None:
    items = "item_id,title\n1,A\n2,B\n1,C\n"
    directory = write_pair(tmp_path, "user_id,item_id,timestamp\n1,1,10\n", items)
    assert load_error(directory) == "items.csv: row 3: duplicate item_id 1"


def test_duplicate_string_item_ids_name_the_row(tmp_path: Path) -> None:
    items = "item_id,title\nB01,A\nB01,B\n"
    directory = write_pair(tmp_path, "user_id,item_id,timestamp\n1,B01,10\n", items)
    assert load_error(directory) == "items.csv: row 2: duplicate item_id 'B01'"


def test_unknown_item_in_interactions_names_row_and_item(tmp_path: Path) -> None:
    inter = "user_id,item_id,timestamp\n1,1,10\n1,9,20\n2,8,30\n"
    directory = write_pair(tmp_path, inter, ITEMS_CSV)
    assert load_error(directory) == (
        "interactions.csv: row 2: item_id 9 is not in items.csv (2 such rows)"
    )


def test_unknown_item_in_ml100k_names_the_files(tmp_path: Path) -> None:
    directory = write_ml100k(tmp_path / "ml")
    with (directory / "u.data").open("a", encoding="ascii") as f:
        f.write("3\t99\t4\t890000001\n")
    assert load_error(directory) == "u.data: row 6: item_id 99 is not in u.item (1 such rows)"


def test_unparsable_timestamp_names_row_and_column(tmp_path: Path) -> None:
    inter = "user_id,item_id,timestamp\n1,1,100\n1,2,yesterday\n"
    directory = write_pair(tmp_path, inter, ITEMS_CSV)
    assert load_error(directory) == (
        "interactions.csv: row 2: column 'timestamp': cannot parse 'yesterday' as a timestamp "
        "(seconds since 1970)"
    )


def test_unparsable_date_string_names_row_and_column(tmp_path: Path) -> None:
    inter = "user_id,item_id,timestamp\n1,1,2020-01-01\n1,2,31/31/2020\n"
    directory = write_pair(tmp_path, inter, ITEMS_CSV)
    assert load_error(directory) == (
        "interactions.csv: row 2: column 'timestamp': cannot parse '31/31/2020'"
    )


def test_empty_timestamp_cell_names_row_and_column(tmp_path: Path) -> None:
    inter = "user_id,item_id,timestamp\n1,1,100\n1,2,\n"
    directory = write_pair(tmp_path, inter, ITEMS_CSV)
    assert load_error(directory).startswith(
        "interactions.csv: row 2: column 'timestamp': cannot parse ''"
    )


def test_out_of_range_timestamp_is_rejected(tmp_path: Path) -> None:
    directory = write_pair(tmp_path, "user_id,item_id,timestamp\n1,1,1e20\n", ITEMS_CSV)
    assert load_error(directory).startswith(
        "interactions.csv: row 1: column 'timestamp': cannot parse '1e20'"
    )


@pytest.mark.parametrize("bad", ["abc", "", "inf", "nan"])
def test_unparsable_rating_names_row_and_column(tmp_path: Path, bad: str) -> None:
    inter = f"user_id,item_id,rating,timestamp\n1,1,5,100\n1,2,{bad},200\n"
    directory = write_pair(tmp_path, inter, ITEMS_CSV)
    assert load_error(directory) == (
        f"interactions.csv: row 2: column 'rating': cannot parse {bad!r} as a number"
    )


def test_unparsable_ml1m_rating_names_row_and_column(tmp_path: Path) -> None:
    directory = write_ml1m(tmp_path / "ml")
    (directory / "ratings.dat").write_text("1::1::5::10\n1::2::five::20\n", encoding="ascii")
    assert load_error(directory) == (
        "ratings.dat: row 2: column 'rating': cannot parse 'five' as a number"
    )


def test_empty_user_id_names_row_and_column(tmp_path: Path) -> None:
    directory = write_pair(tmp_path, "user_id,item_id,timestamp\n1,1,10\n,2,20\n", ITEMS_CSV)
    assert load_error(directory) == "interactions.csv: row 2: column 'user_id' is empty"


def test_empty_title_names_row_and_column(tmp_path: Path) -> None:
    items = 'item_id,title\n1,A\n2,""\n'
    directory = write_pair(tmp_path, "user_id,item_id,timestamp\n1,1,10\n", items)
    assert load_error(directory) == "items.csv: row 2: column 'title' is empty"


def test_empty_interactions_file(tmp_path: Path) -> None:
    directory = write_pair(tmp_path, "", ITEMS_CSV)
    assert load_error(directory) == "interactions.csv: file is empty"


def test_header_only_interactions_file(tmp_path: Path) -> None:
    directory = write_pair(tmp_path, "user_id,item_id,timestamp\n", ITEMS_CSV)
    assert load_error(directory) == "interactions.csv: no interactions"


def test_empty_items_file(tmp_path: Path) -> None:
    directory = write_pair(tmp_path, "user_id,item_id,timestamp\n1,1,10\n", "  \n")
    assert load_error(directory) == "items.csv: file is empty"


def test_empty_ml100k_ratings_file(tmp_path: Path) -> None:
    directory = write_ml100k(tmp_path / "ml")
    (directory / "u.data").write_bytes(b"")
    assert load_error(directory) == "u.data: file is empty"


def test_empty_ml1m_movies_file(tmp_path: Path) -> None:
    directory = write_ml1m(tmp_path / "ml")
    (directory / "movies.dat").write_bytes(b"\n\n")
    assert load_error(directory) == "movies.dat: file is empty"


def test_undecodable_bytes_in_a_utf8_file_name_the_line(tmp_path: Path) -> None:
    items = "item_id,title\n1,A\n2,Caf\xe9\n".encode("latin-1")
    directory = write_pair(tmp_path, "user_id,item_id,timestamp\n1,1,10\n", items)
    assert load_error(directory) == "items.csv: line 3: cannot decode bytes as utf-8"


def test_undecodable_latest_small_ratings(tmp_path: Path) -> None:
    directory = write_latest(tmp_path / "ml")
    (directory / "ratings.csv").write_bytes(b"userId,movieId,rating,timestamp\n1,1,\xff,1\n")
    assert load_error(directory) == "ratings.csv: line 2: cannot decode bytes as utf-8"


def test_ragged_csv_row(tmp_path: Path) -> None:
    inter = "user_id,item_id,timestamp\n1,1,10\n1,2,20,99\n"
    directory = write_pair(tmp_path, inter, ITEMS_CSV)
    assert load_error(directory).startswith("interactions.csv: malformed table (")


def test_ml100k_wrong_column_count(tmp_path: Path) -> None:
    directory = write_ml100k(tmp_path / "ml")
    (directory / "u.data").write_text("1\t1\t5\n", encoding="ascii")
    assert load_error(directory) == "u.data: expected 4 tab-separated columns, got 3"


def test_corrupt_parquet(tmp_path: Path) -> None:
    directory = tmp_path / "pq"
    directory.mkdir()
    (directory / "interactions.parquet").write_bytes(b"PAR1 definitely not parquet")
    pd.DataFrame({"item_id": [1], "title": ["A"]}).to_parquet(directory / "items.parquet")
    assert load_error(directory).startswith("interactions.parquet: cannot read parquet (")


# ---------------------------------------------------------------------------------------------
# TrainData


@pytest.fixture
def train(tmp_path: Path) -> TrainData:
    dataset = load_dataset(write_generic_csv(tmp_path / "g"))
    return TrainData(dataset.interactions, dataset.catalog)


def test_matrix_shape_is_users_by_full_catalog(train: TrainData) -> None:
    assert train.matrix.shape == (3, 5)


def test_matrix_marks_exactly_the_training_pairs(train: TrainData) -> None:
    rows, cols = train.matrix.nonzero()
    pairs = {(train.user_ids[r], train.item_ids[c]) for r, c in zip(rows, cols, strict=True)}
    assert pairs == {(u, i) for u, i, _, _ in RATINGS}
    assert set(train.matrix.data.tolist()) == {1.0}


def test_item_without_interactions_is_indexed_with_zero_popularity(train: TrainData) -> None:
    assert train.item_popularity[train.item_index[5]] == 0
    assert train.item_popularity.tolist() == [2, 1, 1, 1, 0]


def test_history_is_chronological(train: TrainData) -> None:
    # user 1 rated item 2 (t=874965700) before item 1 (t=874965758), though the file lists 1 first
    assert train.history(1).tolist() == [2, 1]


def test_history_ratings_align_with_history(train: TrainData) -> None:
    assert train.history_ratings(1).tolist() == [3.0, 5.0]


def test_unknown_user_raises(train: TrainData) -> None:
    with pytest.raises(UnknownUserError, match=r"^unknown user 99: not in the training data"):
        train.history(99)


def test_user_indices_reject_an_unknown_user(train: TrainData) -> None:
    with pytest.raises(UnknownUserError):
        train.user_indices([1, 99])


def test_string_user_id_maps_to_int(train: TrainData) -> None:
    assert train.history("1").tolist() == train.history(1).tolist()
    assert train.user_indices(["3", np.int64(2)]).tolist() == [2, 1]


def test_non_numeric_string_user_is_unknown(train: TrainData) -> None:
    with pytest.raises(UnknownUserError):
        train.check_user("alice")


def test_seen_items_and_mask(train: TrainData) -> None:
    assert train.seen_items(2) == frozenset({1, 3})
    mask = train.seen_mask(train.user_indices([2]))
    assert mask.tolist() == [[True, False, True, False, False]]


def test_items_returns_catalog_rows_in_the_given_order(train: TrainData) -> None:
    assert train.items([3, 1])["title"].tolist() == ["Amélie", "Toy Story"]


def test_string_user_ids_work_with_int_like_lookups(tmp_path: Path) -> None:
    inter = "user_id,item_id,timestamp\nu1,1,10\nu2,2,20\n"
    dataset = load_dataset(write_pair(tmp_path, inter, ITEMS_CSV))
    train = TrainData(dataset.interactions, dataset.catalog)
    assert train.history("u2").tolist() == [2]
    with pytest.raises(UnknownUserError):
        train.history(1)
