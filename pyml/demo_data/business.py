"""The simulated business: its catalogue and the month-by-month simulation, as clean columns.

Everything here is typed and tidy (ids, dates, codes as numbers); `tables.py` renders it as
the text a source system would deliver and `dirt.py` spoils it.
"""

from __future__ import annotations

import numpy as np

Columns = dict[str, np.ndarray]  # column name -> 1-d array of str (object or unicode dtype)
Tables = dict[str, Columns]  # raw table name -> its columns, in order

MONTHS = np.arange("2024-01", "2026-01", dtype="datetime64[M]")
LAST_DAY = np.datetime64("2025-12-31")
FIRST_SIGNUP = np.datetime64("2023-01-01")
PLANS = [  # plan_code, plan_name, monthly price in USD, tier
    ("starter", "Starter", 9.0, "basic"), ("basic", "Basic", 19.0, "basic"),
    ("team", "Team", 39.0, "pro"), ("pro", "Pro", 79.0, "pro"),
    ("business", "Business", 149.0, "enterprise"),
    ("enterprise", "Enterprise", 299.0, "enterprise")]
LEGACY_PLAN, LEGACY_PRICE = "legacy_x", 29.0  # sold in early 2023, missing from the plan table
COUNTRIES = ["US", "GB", "DE", "FR", "CA", "AU", "NL", "ES", "BR", "IN"]
COUNTRY_P = [0.38, 0.12, 0.1, 0.08, 0.07, 0.05, 0.05, 0.05, 0.05, 0.05]
CURRENCY = {"GB": "GBP", "DE": "EUR", "FR": "EUR", "NL": "EUR", "ES": "EUR"}
USD_PER_UNIT = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27}
CHANNELS = ["organic", "paid_search", "paid_social", "referral", "partner", "email"]
CHANNEL_P = [0.3, 0.22, 0.18, 0.12, 0.1, 0.08]
CHANNEL_RISK = np.array([0.0, 0.15, 0.35, -0.4, -0.2, 0.1])
SIZES = ["1-10", "11-50", "51-200", "201-1000", "1000+"]
EVENT_TYPES = ["login", "dashboard_view", "report_run", "export", "api_call"]
CATEGORIES = ["billing", "bug", "how_to", "feature_request", "account"]
PRIORITIES = ["low", "medium", "high", "urgent"]


def simulate(n: int, rng: np.random.Generator, id_offset: int) -> dict[str, Columns]:
    """Run the month-by-month simulation; returns clean, typed columns per entity."""
    cid = np.arange(1, n + 1, dtype=np.int64) + id_offset
    span = int((np.datetime64("2025-12-15") - FIRST_SIGNUP).astype(int))
    signup = FIRST_SIGNUP + rng.integers(0, span, n).astype("timedelta64[D]")
    need = rng.normal(size=n)
    ideal = np.clip(np.rint(2.5 + 1.3 * need), 0, 5).astype(int)
    plan = np.clip(ideal + rng.choice([-2, -1, 0, 0, 0, 1, 2], n), 0, 5)
    legacy = (signup < np.datetime64("2023-07-01")) & (rng.random(n) < 0.12)
    size = np.clip(np.rint(1.5 + need + rng.normal(0, 0.7, n)), 0, 4).astype(int)
    country = rng.choice(len(COUNTRIES), n, p=COUNTRY_P)
    channel = rng.choice(len(CHANNELS), n, p=CHANNEL_P)
    bad_card = rng.random(n) < 0.12
    base = rng.normal(0.5, 0.5, n) + 0.15 * need  # each customer's usual engagement (log scale)
    drift = rng.normal(-0.03, 0.05, n)  # ... which slowly declines for most
    engagement = base + rng.normal(0, 0.4, n)
    billing_day = np.minimum((signup - signup.astype("datetime64[M]")).astype(int), 27)
    price_table = np.array([p[2] for p in PLANS])

    churned, fading = np.zeros(n, bool), np.zeros(n, bool)
    churn_date = np.full(n, np.datetime64("NaT"), "datetime64[D]")
    sub_start = signup.copy()
    lag1, lag2, lag3 = engagement.copy(), engagement.copy(), engagement.copy()
    # Last month's failed payments, unrecovered failures, tickets and unhappy tickets.
    prev_failed: np.ndarray = np.zeros(n)
    prev_unrecovered, prev_tickets, prev_unhappy = prev_failed, prev_failed, prev_failed
    ev: list[Columns] = []  # per-month parts of each entity, concatenated at the end
    pay: list[Columns] = []
    tic: list[Columns] = []
    subs: list[Columns] = []
    for month in MONTHS:
        start, nxt = month.astype("datetime64[D]"), (month + 1).astype("datetime64[D]")
        dim = int((nxt - start).astype(int))
        alive = (signup < nxt) & ~churned
        new = signup >= start
        # Some customers start to fade out (and a few recover): their usage falls month by month.
        fading = np.where(fading, rng.random(n) > 0.15, rng.random(n) < 0.03)
        base = base + drift - 0.3 * fading  # a random walk around a drifting, personal level
        engagement = base + 0.85 * (engagement - base) + rng.normal(0, 0.2, n)
        trend = lag1 - lag3  # churn follows the disengagement of the months before
        # A few customers move one plan towards the plan that fits them.
        moved = alive & ~new & ~legacy & (plan != ideal) & (rng.random(n) < 0.01)
        moved_at = start + rng.integers(0, dim, n).astype("timedelta64[D]")
        subs.append({"customer_id": cid[moved], "plan": plan[moved], "legacy": legacy[moved],
                     "started": sub_start[moved], "ended": moved_at[moved],
                     "status": np.full(int(moved.sum()), "switched")})
        sub_start = np.where(moved, moved_at, sub_start)
        plan = np.where(moved, plan + np.sign(ideal - plan), plan)
        price = np.where(legacy, LEGACY_PRICE, price_table[plan])
        logit = (-6.0 - 3.5 * trend - 2.0 * (lag1 - 0.5) + 1.2 * prev_failed
                 + 1.8 * prev_unrecovered + 0.4 * prev_tickets + 0.8 * prev_unhappy
                 + 0.7 * np.abs(plan - ideal) + 2.0 * CHANNEL_RISK[channel]
                 + 0.4 * ((start - signup).astype(int) < 90))
        churn_now = alive & ~new & (rng.random(n) < 1 / (1 + np.exp(-logit)))
        churn_at = start + rng.integers(0, dim, n).astype("timedelta64[D]")
        a_start = np.maximum(start, signup)
        a_end = np.where(churn_now, churn_at, nxt)
        active_days = np.where(alive, np.maximum((a_end - a_start).astype(int), 0), 0)
        frac = active_days / dim
        # Usage: Poisson(engagement) events a month, spread over the active days.
        counts = rng.poisson(np.exp(engagement) * frac)
        who = np.repeat(np.arange(n), counts)
        at = (a_start[who].astype("datetime64[s]")
              + (rng.random(len(who)) * active_days[who] * 86400).astype("timedelta64[s]"))
        minutes = rng.gamma(4.0, 3.0 * np.exp(0.6 * engagement[who]))
        ev.append({"customer_id": cid[who], "at": at, "type": rng.integers(0, 5, len(who)),
                   "minutes": np.round(minutes, 1)})
        # Payments: one a month on the billing day; failures are retried a few days later.
        bill = start + np.minimum(billing_day, dim - 1).astype("timedelta64[D]")
        billed = alive & (bill >= a_start) & (bill < a_end)
        failed = billed & (rng.random(n) < 0.03 + 0.3 * bad_card + 0.05 * (engagement < 0))
        retry_at = bill + rng.integers(3, 8, n).astype("timedelta64[D]")
        retried = failed & (retry_at <= LAST_DAY) & (~churn_now | (retry_at < a_end))
        recovered = retried & (rng.random(n) < 0.55)
        for mask, day, ok in ((billed, bill, ~failed), (retried, retry_at, recovered)):
            pay.append({"customer_id": cid[mask], "at": day[mask], "ok": ok[mask],
                        "usd": price[mask], "country": country[mask]})
        # Support tickets: more on big plans and when payments fail or usage drops.
        tier = np.where(legacy, 1, plan // 2)
        rate = (0.04 + 0.05 * tier + 0.7 * failed + 0.1 * (trend < -0.4)) * frac
        tcount = rng.poisson(rate)
        tw = np.repeat(np.arange(n), tcount)
        t_at = (a_start[tw].astype("datetime64[s]")
                + (rng.random(len(tw)) * active_days[tw] * 86400).astype("timedelta64[s]"))
        is_billing = failed[tw] & (rng.random(len(tw)) < 0.8)
        category = np.where(is_billing, 0, rng.integers(1, 5, len(tw)))
        prio = np.clip(rng.integers(0, 3, len(tw)) + (tier[tw] == 2) + failed[tw], 0, 3)
        score = np.clip(np.rint(4.2 - 1.3 * failed[tw] - 0.6 * (engagement[tw] < 0)
                                + rng.normal(0, 0.9, len(tw))), 1, 5)
        tic.append({"customer_id": cid[tw], "at": t_at, "category": category,
                    "priority": prio, "score": score})
        prev_failed = failed + (retried & ~recovered)
        prev_unrecovered = (failed & ~recovered).astype(float)
        prev_tickets = tcount.astype(float)
        prev_unhappy = np.bincount(tw, weights=score <= 2, minlength=n)
        churned |= churn_now
        churn_date = np.where(churn_now, churn_at, churn_date)
        lag3, lag2, lag1 = lag2, lag1, engagement

    # Retries scheduled past a churn date are dropped: after churn there is no activity.
    payments = concat(pay)
    churned_on = churn_date[payments["customer_id"] - id_offset - 1]
    payments = take(payments, np.isnat(churned_on) | (payments["at"] < churned_on))
    subs.append({"customer_id": cid, "plan": plan, "legacy": legacy, "started": sub_start,
                 "ended": churn_date, "status": np.where(churned, "cancelled", "active")})
    customers = {"customer_id": cid, "signup": signup, "country": country, "channel": channel,
                 "size": size}
    return {"customers": customers, "subscriptions": concat(subs), "usage": concat(ev),
            "payments": payments, "tickets": concat(tic)}


def concat(parts: list[Columns]) -> Columns:
    """Concatenate per-month column dicts and order the rows by customer, then time."""
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    when = out["at"] if "at" in out else out["started"]
    order = np.lexsort((when, out["customer_id"]))
    return {k: v[order] for k, v in out.items()}


def take(cols: Columns, rows: np.ndarray) -> Columns:
    """Select rows from every column."""
    return {k: v[rows] for k, v in cols.items()}
