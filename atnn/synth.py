"""SYNTHETIC e-commerce data for scale tests: `atnn synth --users N --items M --days D --seed S --out DIR`.

Everything written here is made up (the real datasets stay the quality reference). The folder is in
the canonical format of README "Use your own data": `items.parquet`, `users.parquet`,
`events.parquet` and a `spec.yaml`, so the ordinary commands ingest, train and rank it. Beside them:

- `planted_popularity.parquet`: per item the planted truth, the expected positive rate over the user
  population, which depends on the profile only (category, brand, title words, price) plus a small
  item-level noise; a ranking of new arrivals can be checked against it with Spearman's rho;
- `drops/<day>/items.parquet` when `--arrivals A` is given: A new arrivals listed on the day after
  the last one (no events yet), the day a scale run ranks.

Profiles are Taobao-like: a category tree (top category / leaf), brand, seller, price and title
tokens; users with gender, age band, city level and purchase power. Events are impressions, clicks,
carts, favs and buys with timestamps in the first days after an item's listing. Generation is
vectorized numpy and streams to Parquet in chunks: the event log is never held in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

START = datetime(2024, 1, 1, tzinfo=timezone.utc)
N_TOP = 24          # top categories
N_LEAF = 2400       # leaf categories (each under one top category)
N_BRAND = 20000
N_SELLER = 100000
N_WORDS = 8000      # title vocabulary
GENDERS = np.array(["F", "M"])
AGE_BANDS = np.array(["18-24", "25-29", "30-34", "35-39", "40-49", "50-59", "60+"])
CITY_LEVELS = np.array(["1", "2", "3", "4", "5"])
POWERS = np.array(["low", "mid", "high"])
POSITIVE_KINDS = np.array(["click", "cart", "fav", "buy"])
CHUNK = 1_000_000

SPEC_YAML = """\
# SYNTHETIC data written by `atnn synth` (atnn/synth.py) for scale tests: not a real shop.
name: synth
description: SYNTHETIC Taobao-like shop (atnn synth) with a planted profile-dependent popularity
reader: canonical
id_type: int64
item:
  listed_at: column
  title_field: title
  category_field: category
  features:
    - {name: title, kind: text_tokens, max_len: 8, max_vocab: 10000}
    - {name: category, kind: categorical, max_vocab: 5000, required: true, description: "leaf of the category tree"}
    - {name: top_category, kind: categorical}
    - {name: brand, kind: categorical, max_vocab: 5000}
    - {name: seller, kind: categorical, hash_buckets: 20000}
    - {name: price, kind: numeric, log: true, required: true}
user:
  features:
    - {name: gender, kind: categorical}
    - {name: age_band, kind: categorical}
    - {name: city_level, kind: categorical}
    - {name: purchase_power, kind: categorical}
event:
  kinds: [impression, click, cart, fav, buy]
stats:
  window_days: 3
  features: [pv, uv, positives, pos_rate, n_click, n_cart, n_fav, n_buy]
"""


@dataclass
class World:
    """The hidden parameters of the synthetic shop, drawn once from the seed."""

    leaf_top: np.ndarray        # top category of each leaf
    leaf_effect: np.ndarray
    leaf_price: np.ndarray      # log-price centre of each leaf
    brand_effect: np.ndarray
    brand_weight: np.ndarray    # brand popularity (Zipf) for sampling
    word_effect: np.ndarray
    affinity: np.ndarray        # gender x top category
    power_price: np.ndarray     # purchase power x price tercile
    age_effect: np.ndarray
    city_effect: np.ndarray
    words: pa.Array             # title vocabulary
    base_logit: float = -2.2

    @classmethod
    def draw(cls, seed: int) -> "World":
        rng = np.random.default_rng([seed, 0])
        brand_weight = 1.0 / np.arange(1, N_BRAND + 1) ** 0.9
        return cls(
            leaf_top=rng.integers(0, N_TOP, N_LEAF),
            leaf_effect=rng.normal(0, 0.5, N_LEAF),
            leaf_price=rng.normal(4.0, 1.0, N_LEAF),
            brand_effect=rng.normal(0, 0.4, N_BRAND),
            brand_weight=brand_weight / brand_weight.sum(),
            word_effect=rng.normal(0, 0.25, N_WORDS),
            affinity=rng.normal(0, 0.4, (len(GENDERS), N_TOP)),
            power_price=np.array([[0.3, 0.0, -0.5], [0.0, 0.1, 0.0], [-0.3, 0.0, 0.4]]),
            age_effect=rng.normal(0, 0.2, len(AGE_BANDS)),
            city_effect=rng.normal(0, 0.15, len(CITY_LEVELS)),
            words=pa.array([f"w{i}" for i in range(N_WORDS)]),
        )


@dataclass
class ItemLatents:
    """What events need of every item (small numeric arrays, not the profile strings)."""

    top: np.ndarray
    effect: np.ndarray          # profile-dependent logit offset (the planted quality)
    price_tercile: np.ndarray
    listed_s: np.ndarray        # seconds since START


def _items_chunk(world: World, rng: np.random.Generator, first_id: int, n: int, day_from: int, days: int):
    """One chunk of item profiles (an Arrow table) and its latents."""
    leaf = rng.integers(0, N_LEAF, n)
    top = world.leaf_top[leaf]
    brand = rng.choice(N_BRAND, n, p=world.brand_weight)
    seller = rng.integers(0, N_SELLER, n)
    log_price = world.leaf_price[leaf] + rng.normal(0, 0.6, n)
    # Title: brand word, leaf word, then 2-4 words drawn near the top category's part of the vocabulary.
    n_words = rng.integers(2, 5, n)
    word_ids = (top[:, None] * (N_WORDS // N_TOP) + rng.integers(0, N_WORDS // 4, (n, 4))) % N_WORDS
    present = np.arange(4)[None, :] < n_words[:, None]
    words_effect = (world.word_effect[word_ids] * present).sum(1) / n_words
    tercile = np.digitize(log_price, [3.5, 4.5])
    effect = (
        world.leaf_effect[leaf] + world.brand_effect[brand] + words_effect
        - 0.25 * (log_price - 4.0) + rng.normal(0, 0.15, n)
    )
    listed_s = day_from * 86400 + rng.integers(0, days * 86400, n)
    parts = [pc.binary_join_element_wise(pa.array(np.char.add("b", brand.astype(str))), pa.array(np.char.add("leaf", leaf.astype(str))), " ")]
    for j in range(4):
        word = pc.take(world.words, pa.array(word_ids[:, j]))
        parts.append(pc.if_else(pa.array(present[:, j]), word, pa.scalar("", pa.string())))
    title = pc.utf8_trim_whitespace(pc.binary_join_element_wise(*parts, " "))
    table = pa.table(
        {
            "item_id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
            "listed_at": pa.array((START.timestamp() + listed_s).astype("int64") * 1_000_000, pa.timestamp("us", tz="UTC")),
            "title": title,
            "category": pa.array(np.char.add(np.char.add("c", top.astype(str)), np.char.add("/", leaf.astype(str)))),
            "top_category": pa.array(np.char.add("c", top.astype(str))),
            "brand": pa.array(np.char.add("b", brand.astype(str))),
            "seller": pa.array(np.char.add("s", seller.astype(str))),
            "price": pa.array(np.round(np.exp(log_price), 2)),
        }
    )
    return table, ItemLatents(top, effect, tercile, listed_s)


def _users(world: World, rng: np.random.Generator, n: int):
    gender = rng.integers(0, len(GENDERS), n)
    age = rng.choice(len(AGE_BANDS), n, p=[0.15, 0.2, 0.2, 0.15, 0.15, 0.1, 0.05])
    city = rng.choice(len(CITY_LEVELS), n, p=[0.15, 0.25, 0.25, 0.2, 0.15])
    power = rng.choice(len(POWERS), n, p=[0.4, 0.4, 0.2])
    effect = world.age_effect[age] + world.city_effect[city] + rng.normal(0, 0.3, n)
    table = pa.table(
        {
            "user_id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
            "gender": pa.array(GENDERS[gender]),
            "age_band": pa.array(AGE_BANDS[age]),
            "city_level": pa.array(CITY_LEVELS[city]),
            "purchase_power": pa.array(POWERS[power]),
        }
    )
    return table, gender, power, effect


def _logit(world: World, items: ItemLatents, item: np.ndarray, gender: np.ndarray, power: np.ndarray, user_effect: np.ndarray) -> np.ndarray:
    return (
        world.base_logit + items.effect[item] + user_effect
        + world.affinity[gender, items.top[item]] + world.power_price[power, items.price_tercile[item]]
    )


def planted_popularity(world: World, items: ItemLatents, gender: np.ndarray, power: np.ndarray, user_effect: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Expected positive rate of each item over the users (a 2,048-user sample stands for them all)."""
    sample = rng.choice(len(gender), min(2048, len(gender)), replace=False)
    out = np.empty(len(items.effect))
    for start in range(0, len(out), 16384):
        item = np.arange(start, min(start + 16384, len(out)))
        logit = _logit(world, items, item[:, None], gender[sample][None, :], power[sample][None, :], user_effect[sample][None, :])
        out[item] = (1.0 / (1.0 + np.exp(-logit))).mean(1)
    return out


def _concat(parts: list[ItemLatents]) -> ItemLatents:
    return ItemLatents(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("top", "effect", "price_tercile", "listed_s")))


def generate(
    out: Path, *, users: int, items: int, days: int, seed: int = 0, events: int | None = None,
    arrivals: int = 0, delay_days: float = 2.0,
) -> dict:
    """Write the SYNTHETIC canonical folder `out`; returns a summary (also in `out/synth.json`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    events = 50 * users if events is None else events
    world = World.draw(seed)
    rng = np.random.default_rng([seed, 1])
    (out / "spec.yaml").write_text(SPEC_YAML, encoding="utf-8")

    user_table, gender, power, user_effect = _users(world, rng, users)
    pq.write_table(user_table, out / "users.parquet")
    del user_table

    latents = []
    with pq.ParquetWriter(out / "items.parquet", _items_chunk(world, np.random.default_rng(0), 1, 1, 0, 1)[0].schema) as writer:
        for start in range(0, items, CHUNK):
            table, lat = _items_chunk(world, rng, 1 + start, min(CHUNK, items - start), 0, days)
            writer.write_table(table)
            latents.append(lat)
    catalogue = _concat(latents)
    truth = {"item_id": [np.arange(1, items + 1, dtype=np.int64)], "popularity": [planted_popularity(world, catalogue, gender, power, user_effect, rng)]}

    arrival_day = (START + timedelta(days=days)).date()
    if arrivals:
        drop = out / "drops" / arrival_day.isoformat()
        drop.mkdir(parents=True, exist_ok=True)
        new_latents = []
        with pq.ParquetWriter(drop / "items.parquet", _items_chunk(world, np.random.default_rng(0), 1, 1, 0, 1)[0].schema) as writer:
            for start in range(0, arrivals, CHUNK):
                table, lat = _items_chunk(world, rng, items + 1 + start, min(CHUNK, arrivals - start), days, 1)
                writer.write_table(table)
                new_latents.append(lat)
        new = _concat(new_latents)
        truth["item_id"].append(np.arange(items + 1, items + arrivals + 1, dtype=np.int64))
        truth["popularity"].append(planted_popularity(world, new, gender, power, user_effect, rng))
    pq.write_table(
        pa.table({"item_id": np.concatenate(truth["item_id"]), "popularity": np.concatenate(truth["popularity"])}),
        out / "planted_popularity.parquet",
    )

    # Events: users by activity (log-normal), items by exposure (profile-dependent, so volume carries
    # signal too), a delay after listing drawn from an exponential cut at the end of the data window.
    activity = rng.lognormal(0, 1.0, users)
    user_cdf = np.cumsum(activity / activity.sum())
    exposure = np.exp(0.6 * catalogue.effect) * rng.lognormal(0, 0.5, items)
    item_cdf = np.cumsum(exposure / exposure.sum())
    horizon = days * 86400
    scale = delay_days * 86400
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")),
                        ("kind", pa.string()), ("label", pa.int8())])
    kind_probs = np.array([0.7, 0.12, 0.1, 0.08])
    positives = 0
    with pq.ParquetWriter(out / "events.parquet", schema) as writer:
        for start in range(0, events, CHUNK):
            n = min(CHUNK, events - start)
            user = np.minimum(np.searchsorted(user_cdf, rng.random(n)), users - 1)
            item = np.minimum(np.searchsorted(item_cdf, rng.random(n)), items - 1)
            room = np.maximum(horizon - catalogue.listed_s[item], 1)
            delay = -scale * np.log1p(-rng.random(n) * -np.expm1(-room / scale))
            ts_s = catalogue.listed_s[item] + np.minimum(delay.astype(np.int64), room - 1)
            p = 1.0 / (1.0 + np.exp(-_logit(world, catalogue, item, gender[user], power[user], user_effect[user])))
            label = rng.random(n) < p
            kind = np.where(label, POSITIVE_KINDS[rng.choice(4, n, p=kind_probs)], "impression")
            positives += int(label.sum())
            writer.write_table(pa.table(
                {
                    "user_id": pa.array(user + 1),
                    "item_id": pa.array(item + 1),
                    "ts": pa.array((START.timestamp() + ts_s).astype("int64") * 1_000_000, pa.timestamp("us", tz="UTC")),
                    "kind": pa.array(kind),
                    "label": pa.array(label.astype(np.int8)),
                },
                schema=schema,
            ))
    summary = {
        "synthetic": True,
        "generator": "atnn synth (atnn/synth.py)",
        "seed": seed, "users": users, "items": items, "days": days, "events": events,
        "positive_share": positives / max(events, 1),
        "start": START.isoformat(), "arrivals": arrivals,
        "arrival_day": arrival_day.isoformat() if arrivals else None,
    }
    (out / "synth.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
