"""Tiny seeded data in the exact file formats of the Alimama/Taobao display-ad dataset (made up).

The four files as the public dataset ships them: comma-separated, a header row, no quoting; the last
header of user_profile.csv ends in a space; empty cells in user_profile.csv; brand NULL in
ad_feature.csv and behavior_log.csv; unix-second timestamps; ads keyed by adgroup_id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

START = 1494000000  # 2017-05-05 16:00 UTC, where the real impression log begins
DAY = 86400
CATEGORIES = [6261, 4520, 1665, 6406, 7266, 4282]
BRANDS = [9001, 9002, 9003, 9004, 9005, 9006, 9007]
PIDS = ["430548_1007", "430539_1007"]
USER_HEADER = (
    "userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,occupation,"
    "new_user_class_level "  # the trailing space is in the real file
)


def write_tiny_taobao(
    folder: Path, *, n_users: int = 60, n_ads: int = 80, n_impressions: int = 3000, days: int = 8, seed: int = 0
) -> Path:
    """Ads arrive over `days` days (an ad's first impression is its arrival); clicks follow a planted
    signal: category 6261 is clicked by women (final_gender_code 2), 4520 by men, others rarely.
    About a tenth of the users have no user_profile row; one impression has clk and nonclk both 1."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ad_ids = 100_000 + np.sort(rng.choice(900_000, n_ads, replace=False))
    cate = rng.choice(CATEGORIES, n_ads)
    brand = [("NULL" if i % 9 == 4 else str(rng.choice(BRANDS))) for i in range(n_ads)]
    price = np.round(np.exp(rng.normal(4, 1.2, n_ads)), 1)
    ads = [
        f"{ad_ids[i]},{cate[i]},{rng.integers(1, 500_000)},{rng.integers(1, 260_000)},{brand[i]},{price[i]}"
        for i in range(n_ads)
    ]
    (folder / "ad_feature.csv").write_text("adgroup_id,cate_id,campaign_id,customer,brand,price\n" + "\n".join(ads) + "\n")

    user_ids = 1 + np.arange(n_users) * 7
    gender = rng.choice([1, 2], n_users)
    profiles = []
    for u in range(n_users):
        if u % 10 == 9:
            continue  # no profile row: the spec keeps this user's impressions with an empty profile
        pvalue = "" if rng.random() < 0.4 else str(rng.integers(1, 4))
        city = "" if rng.random() < 0.3 else str(rng.integers(1, 5))
        profiles.append(
            f"{user_ids[u]},0,{rng.integers(0, 13)},{gender[u]},{rng.integers(0, 7)},{pvalue},"
            f"{rng.integers(1, 4)},{int(rng.random() < 0.1)},{city}"
        )
    (folder / "user_profile.csv").write_text(USER_HEADER + "\n" + "\n".join(profiles) + "\n")

    arrival = START + np.sort(rng.integers(0, days * DAY - DAY // 2, n_ads))
    end = START + days * DAY
    rows = []
    for i in range(n_ads):  # every ad's first impression is its arrival
        u = int(rng.integers(0, n_users))
        rows.append((u, int(arrival[i]), i))
    while len(rows) < n_ads + n_impressions:
        i = int(rng.integers(0, n_ads))
        ts = int(arrival[i] + rng.integers(1, 3 * DAY))
        if ts >= end:
            continue
        rows.append((int(rng.integers(0, n_users)), ts, i))
    lines = []
    for u, ts, i in rows:
        affinity = {6261: 1.5 if gender[u] == 2 else -1.5, 4520: 1.5 if gender[u] == 1 else -1.5}.get(int(cate[i]), -1.0)
        clk = int(rng.random() < 1 / (1 + np.exp(-(affinity + rng.normal(0, 0.3)))))
        lines.append(f"{user_ids[u]},{ts},{ad_ids[i]},{PIDS[int(rng.integers(0, 2))]},{1 - clk},{clk}")
    lines.insert(len(lines) // 2, f"{user_ids[0]},{int(arrival[-1]) + 60},{ad_ids[-1]},{PIDS[0]},1,1")  # inconsistent
    order = rng.permutation(len(lines))  # the real file is not sorted by time
    (folder / "raw_sample.csv").write_text(
        "user,time_stamp,adgroup_id,pid,nonclk,clk\n" + "\n".join(lines[j] for j in order) + "\n"
    )

    behaviors = []
    for _ in range(n_impressions // 2):
        u = int(rng.integers(0, n_users))
        ts = int(START - 14 * DAY + rng.integers(0, (days + 14) * DAY))
        btag = rng.choice(["pv", "cart", "fav", "buy"], p=[0.8, 0.08, 0.06, 0.06])
        i = int(rng.integers(0, n_ads))  # behaviours land on the ads' category and brand pairs
        behaviors.append(f"{user_ids[u]},{ts},{btag},{cate[i]},{brand[i]}")
    (folder / "behavior_log.csv").write_text("user,time_stamp,btag,cate,brand\n" + "\n".join(behaviors) + "\n")
    return folder
