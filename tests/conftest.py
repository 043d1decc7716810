"""Shared pytest fixtures. Each group below belongs to one concern; keep new fixtures grouped."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from llmrec_gen.data import TrainData, item_text

# Real (tiny / default) LLM fixtures live in tests/llm_fixtures.py.
pytest_plugins = ["llm_fixtures"]

# ---------------------------------------------------------------------------------------------
# Seeded randomness


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: tests that draw random data are repeatable."""
    return np.random.default_rng(20240607)


# ---------------------------------------------------------------------------------------------
# Recommenders: a synthetic dataset whose right answer is known (baselines, conformance)

# Each block is a theme: its own genre, its own decade and title words no other block uses, so
# that collaborative and content models alike can tell the blocks apart. The last block gets no
# interactions at all (cold items that every method must still be able to rank).
BLOCK_THEMES: list[tuple[str, int, list[str]]] = [
    (genres, decade, titles.split(", "))
    for genres, decade, titles in [
        (
            "Sci-Fi",
            1960,
            "Galaxy Invaders, Starship Odyssey, Martian Colony, Alien Nebula, "
            "Jupiter Rocket, Cosmic Orbit Station, Space Robot Wars, Astronaut Planet",
        ),
        (
            "Romance",
            1970,
            "Paris Love Affair, Wedding Kiss, Romantic Summer Love, Bridal Heart, "
            "Sweetheart Valentine, Love Letters, First Kiss Romance, Honeymoon Hearts",
        ),
        (
            "Horror",
            1980,
            "Zombie Blood Night, Haunted Ghost House, Vampire Curse, Killer Demon, "
            "Nightmare Graveyard, Bloody Scream, Ghost Zombie Terror, Demon Possession",
        ),
        (
            "Animation|Children's",
            1990,
            "Cartoon Puppy Friends, Little Bunny Adventure, "
            "Teddy Bear Picnic, Kitten Cartoon Party, Happy Puppy Circus, Baby Dragon Toys, "
            "Bunny Kingdom Cartoon, Tiny Toy Friends",
        ),
        ("Western", 1950, "Cowboy Sheriff, Outlaw Gunfight, Saloon Showdown, Ranch Rider"),
    ]
]
USERS_PER_GROUP = 6  # user j of a group holds out item j of its block; items 6, 7 are held by none


@dataclass(frozen=True)
class BlockData:
    """Block-structured interactions with a known right answer.

    Users of group ``g`` interact with every item of block ``g`` except one held-out item each,
    and with nothing else. For every user, the held-out item is the only unseen item that any
    similar user (or any item of the same theme) points to, so it must rank first.

    Attributes:
        train: the training data (IDs are non-contiguous and the catalog rows are shuffled, so
            mixing up IDs and indices shows).
        held_out: user ID -> the item ID that must rank first for that user.
        group: user ID -> block number.
        block_items: block number -> its item IDs (the last block is cold: no interactions).
    """

    train: TrainData
    held_out: dict[int, int]
    group: dict[int, int]
    block_items: list[list[int]]


def make_block_data(seed: int = 0) -> BlockData:
    """Build :class:`BlockData` (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    catalog_rows, block_items = [], []
    for b, (genres, decade, titles) in enumerate(BLOCK_THEMES):
        ids = []
        for i, title in enumerate(titles):
            item_id = 5000 + 13 * (10 * b + i)
            year = decade + i % 3
            catalog_rows.append(
                {
                    "item_id": item_id,
                    "title": title,
                    "year": year,
                    "genres": genres,
                    "text": item_text(title, year, genres),
                }
            )
            ids.append(item_id)
        block_items.append(ids)
    catalog = pd.DataFrame(catalog_rows).iloc[rng.permutation(len(catalog_rows))]
    catalog = catalog.reset_index(drop=True)
    catalog["year"] = catalog["year"].astype("Int64")

    rows, held_out, group = [], {}, {}
    for g in range(len(BLOCK_THEMES) - 1):  # the last block stays cold
        for j in range(USERS_PER_GROUP):
            user_id = 100 + 7 * (g * USERS_PER_GROUP + j)
            held_out[user_id], group[user_id] = block_items[g][j], g
            items = [it for it in block_items[g] if it != block_items[g][j]]
            for t, item_id in enumerate(rng.permutation(items)):
                rows.append((user_id, int(item_id), 4.0, 1_000_000 + 3600 * g + 60 * t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    return BlockData(TrainData(inter, catalog), held_out, group, block_items)


@pytest.fixture(scope="session")
def block_data() -> BlockData:
    """The block dataset of :func:`make_block_data` (built once per session; do not mutate)."""
    return make_block_data()
