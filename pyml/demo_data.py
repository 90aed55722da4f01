"""Deterministic, seeded generator of a dirty subscription business: the pyml demo data.

The business is simulated month by month from 2024-01-01 to 2025-12-31. Each customer has a
latent engagement that random-walks; usage events follow it, payments are monthly (some fail,
more often for a latent bad-card trait), support tickets rise when things go wrong, and the
monthly churn hazard rises with falling usage, failed payments, unhappy tickets and a plan that
does not fit the customer. After churn there is no activity, so churn and revenue in the next
90 days are learnable, but not trivially, from behaviour before an as-of date.

Every raw column is text, as it would arrive from a source system, and every table carries a
few percent of dirt: exact duplicate rows, repeated ids with newer versions, messy case and
whitespace, several date formats, impossible dates, blank strings, absurd amounts, unknown
codes and orphan foreign keys. Cleansing is the job of the dbt staging models.

    python -m pyml.demo_data --out seeds/                        # the committed dbt seeds
    python -m pyml.demo_data --scale 200000 --duckdb bench.duckdb   # raw.* tables for benchmarks

The same seed gives byte-identical CSV files.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import duckdb
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
FIRST = ["anna", "ben", "carla", "david", "emma", "felix", "grace", "hugo", "ines", "jonas",
         "kira", "liam", "maya", "noah", "olga", "paul", "rosa", "sam", "tara", "yusuf"]
LAST = ["smith", "garcia", "mueller", "martin", "rossi", "kowalski", "silva", "tanaka", "brown",
        "dubois", "jansen", "lopez", "novak", "olsen", "patel", "schmidt", "weber", "khan"]
DOMAINS = ["example.com", "mail.test", "corp.example", "inbox.test"]
ORPHAN_BASE = 900_000_000  # customer ids from here on do not exist
DIRT = 0.02  # share of rows hit by each kind of dirt


def _simulate(n: int, rng: np.random.Generator, id_offset: int) -> dict[str, Columns]:
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
    payments = _concat(pay)
    churned_on = churn_date[payments["customer_id"] - id_offset - 1]
    payments = _take(payments, np.isnat(churned_on) | (payments["at"] < churned_on))
    subs.append({"customer_id": cid, "plan": plan, "legacy": legacy, "started": sub_start,
                 "ended": churn_date, "status": np.where(churned, "cancelled", "active")})
    customers = {"customer_id": cid, "signup": signup, "country": country, "channel": channel,
                 "size": size}
    return {"customers": customers, "subscriptions": _concat(subs), "usage": _concat(ev),
            "payments": payments, "tickets": _concat(tic)}


def _concat(parts: list[Columns]) -> Columns:
    """Concatenate per-month column dicts and order the rows by customer, then time."""
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    when = out["at"] if "at" in out else out["started"]
    order = np.lexsort((when, out["customer_id"]))
    return {k: v[order] for k, v in out.items()}


def _text(values: np.ndarray) -> np.ndarray:
    """Render numbers as text (object dtype so dirt can replace single values)."""
    return values.astype(str).astype(object)


def _stamp(values: np.ndarray, with_time: bool) -> np.ndarray:
    """Render datetimes as ISO text: 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM:SS'; NaT -> ''."""
    unit = "s" if with_time else "D"
    text = np.strings.replace(np.datetime_as_string(values.astype(f"datetime64[{unit}]")), "T", " ")
    return np.where(np.isnat(values), "", text).astype(object)


def _pick(rng: np.random.Generator, n: int, share: float = DIRT) -> np.ndarray:
    """Indices of a random `share` of n rows."""
    return np.flatnonzero(rng.random(n) < share)


def _mess_case(rng: np.random.Generator, col: np.ndarray, share: float = 0.06) -> None:
    """Upper-case, title-case or pad a share of the values, in place."""
    for i in _pick(rng, len(col), share):
        v = str(col[i])
        col[i] = (v.upper(), v.title(), f"  {v} ", f" {v.upper()}")[rng.integers(0, 4)]


def _mess_dates(rng: np.random.Generator, col: np.ndarray, impossible: bool = True) -> None:
    """Rewrite a share of ISO dates in other formats and, optionally, some impossible dates."""
    for i in _pick(rng, len(col), 0.08):
        v = str(col[i])
        if not v:
            continue
        y, m, d, rest = v[:4], v[5:7], v[8:10], v[10:]
        col[i] = (f"{m}/{d}/{y}{rest[:6]}", f"{d}.{m}.{y}", f"{y}/{m}/{d}",
                  f"{y}-{m}-{d}T{rest.strip() or '00:00:00'}")[rng.integers(0, 4)]
    if impossible:
        bad = ["2099-01-01", "1900-01-01", "2025-02-30", "2024-13-01", "31/02/2025"]
        for i in _pick(rng, len(col), 0.006):
            col[i] = bad[rng.integers(0, len(bad))]


def _replace(rng: np.random.Generator, col: np.ndarray, values: list[str], share: float) -> None:
    """Replace a share of values with values drawn from `values` (unknown codes, bad numbers)."""
    for i in _pick(rng, len(col), share):
        col[i] = values[rng.integers(0, len(values))]


def _take(cols: Columns, rows: np.ndarray) -> Columns:
    """Select rows from every column."""
    return {k: v[rows] for k, v in cols.items()}


def _with_duplicates(rng: np.random.Generator, cols: Columns, share: float = DIRT) -> Columns:
    """Repeat a share of rows exactly, each copy next to its original."""
    n = len(next(iter(cols.values())))
    rows = np.sort(np.concatenate([np.arange(n), _pick(rng, n, share)]), kind="stable")
    return _take(cols, rows)


def _with_orphans(rng: np.random.Generator, cols: Columns, id_col: str, share: float = 0.01,
                  ) -> Columns:
    """Append copies of a share of rows that point at customers that do not exist."""
    n = len(cols[id_col])
    extra = _take(cols, _pick(rng, n, share))
    k = len(extra[id_col])
    extra[id_col] = _text(np.arange(n + 1, n + k + 1))  # ids are 1..n so far
    extra["customer_id"] = _text(ORPHAN_BASE + rng.integers(0, 10_000_000, k))
    return {c: np.concatenate([cols[c], extra[c]]) for c in cols}


def _plans(rng: np.random.Generator) -> Columns:
    """The plan table: six plans, one repeated row and messy tiers and prices."""
    names = ("plan_code", "plan_name", "monthly_price", "tier")
    cols = {k: np.array([f"{p[i]:.2f}" if i == 2 else p[i] for p in PLANS], object)
            for i, k in enumerate(names)}
    cols["tier"][[1, 3]] = ["Basic", " PRO "]
    cols["plan_code"][5] = "Enterprise "
    cols["monthly_price"][4] = "$149.00"
    return _take(cols, np.array([0, 1, 2, 3, 3, 4, 5]))


def _customers(rng: np.random.Generator, c: Columns) -> Columns:
    """Customers with a few older versions of the same id, messy text and dates."""
    n = len(c["customer_id"])
    first, last = rng.integers(0, len(FIRST), n), rng.integers(0, len(LAST), n)
    ids = _text(c["customer_id"])
    name = np.array([f"{FIRST[a].title()} {LAST[b].title()}"
                     for a, b in zip(first, last, strict=True)], object)
    domain = rng.integers(0, len(DOMAINS), n)
    email = np.array([f"{FIRST[a]}.{LAST[b]}{i}@{DOMAINS[d]}"
                      for a, b, i, d in zip(first, last, ids, domain, strict=True)], object)
    opt_in = rng.choice(["true", "false", "yes", "no", "1", "0", "Y", "N", "TRUE"], n)
    updated = c["signup"].astype("datetime64[s]") + rng.integers(0, 86400 * 30, n).astype(
        "timedelta64[s]")
    cols = {"customer_id": ids, "email": email, "full_name": name,
            "country": np.array(COUNTRIES, object)[c["country"]],
            "signup_date": _stamp(c["signup"], False),
            "acquisition_channel": np.array(CHANNELS, object)[c["channel"]],
            "company_size": np.array(SIZES, object)[c["size"]],
            "marketing_opt_in": opt_in.astype(object), "updated_at": _stamp(updated, True)}
    # Older versions of ~3% of customers: an outdated email and country, an earlier updated_at.
    rows = _pick(rng, n, 0.03)
    old = _take(cols, rows)
    old["email"] = np.array([e.replace("@", ".old@") for e in old["email"]], object)
    old["country"] = np.array(rng.choice(["??", "us", "XX", ""], len(rows)), object)
    old["updated_at"] = _stamp(c["signup"][rows] - np.timedelta64(1, "D"), True)
    for col, share in (("email", 0.05), ("full_name", 0.08), ("country", 0.06),
                       ("acquisition_channel", 0.06)):
        _mess_case(rng, cols[col], share)
    _replace(rng, cols["country"], ["??", "", "XX", "u.s."], 0.015)
    _replace(rng, cols["acquisition_channel"], ["tv_campaign", "", "unknown"], 0.02)
    _replace(rng, cols["company_size"], ["", "n/a", "5000+"], 0.02)
    _replace(rng, cols["email"], ["", "not-an-email", "n/a"], 0.01)
    _mess_dates(rng, cols["signup_date"])
    merged = {k: np.concatenate([cols[k], old[k]]) for k in cols}
    order = np.lexsort((merged["updated_at"], merged["customer_id"].astype(np.int64)))
    return _with_duplicates(rng, _take(merged, order))


def _subscriptions(rng: np.random.Generator, s: Columns) -> Columns:
    """Subscriptions, with earlier 'active' versions of some cancelled ones."""
    n = len(s["customer_id"])
    code = np.array([p[0] for p in PLANS], object)[s["plan"]]
    code[s["legacy"]] = LEGACY_PLAN
    cols = {"subscription_id": _text(np.arange(1, n + 1)),
            "customer_id": _text(s["customer_id"]), "plan_code": code,
            "started_at": _stamp(s["started"], True), "cancelled_at": _stamp(s["ended"], True),
            "status": s["status"].astype(object),
            "updated_at": _stamp(np.where(np.isnat(s["ended"]), s["started"], s["ended"]), True)}
    cancelled = np.flatnonzero(s["status"] == "cancelled")
    old = _take(cols, cancelled[rng.random(len(cancelled)) < 0.3])
    old["cancelled_at"] = np.full(len(old["status"]), "", object)
    old["status"] = np.full(len(old["status"]), "active", object)
    old["updated_at"] = old["started_at"].copy()
    _mess_case(rng, cols["plan_code"], 0.05)
    _mess_case(rng, cols["status"], 0.05)
    for i in np.flatnonzero(s["status"] == "cancelled")[::40]:
        cols["status"][i] = "canceled"  # the other spelling, from another service
    for col in ("started_at", "cancelled_at"):
        _mess_dates(rng, cols[col], impossible=False)
    merged = {k: np.concatenate([cols[k], old[k]]) for k in cols}
    return _with_duplicates(rng, merged, 0.01)


def _usage(rng: np.random.Generator, u: Columns) -> Columns:
    """Usage events: messy types, dates and durations, duplicates and orphans."""
    n = len(u["customer_id"])
    minutes = _text(u["minutes"])
    _replace(rng, minutes, ["-5", "-1.0", "99999", "", "1e6"], 0.01)
    _replace(rng, minutes, ["480.0", "720.0", "1440.0"], 0.002)  # all-day sessions: outliers
    cols = {"event_id": _text(np.arange(1, n + 1)), "customer_id": _text(u["customer_id"]),
            "event_at": _stamp(u["at"], True),
            "event_type": np.array(EVENT_TYPES, object)[u["type"]], "duration_minutes": minutes}
    _mess_case(rng, cols["event_type"], 0.04)
    _replace(rng, cols["event_type"], ["page_view_v0", ""], 0.01)
    _mess_dates(rng, cols["event_at"])
    return _with_duplicates(rng, _with_orphans(rng, cols, "event_id"))


def _payments(rng: np.random.Generator, p: Columns) -> Columns:
    """Payments in the customer's currency: messy amounts, currencies and statuses."""
    n = len(p["customer_id"])
    currency = np.array([CURRENCY.get(c, "USD") for c in np.array(COUNTRIES)[p["country"]]])
    rate = np.array([USD_PER_UNIT[c] for c in currency])
    amount = _text(np.round(p["usd"] / rate, 2))
    _replace(rng, amount, ["-50.00", "999999", "", "-0.01", "1000000000"], 0.01)
    for i in _pick(rng, n, 0.01):
        amount[i] = f"${amount[i]}" if amount[i] else amount[i]
    cols = {"payment_id": _text(np.arange(1, n + 1)), "customer_id": _text(p["customer_id"]),
            "paid_at": _stamp(p["at"].astype("datetime64[s]") + rng.integers(
                0, 86400, n).astype("timedelta64[s]"), True),
            "amount": amount, "currency": currency.astype(object),
            "status": np.where(p["ok"], "succeeded", "failed").astype(object)}
    _mess_case(rng, cols["currency"], 0.05)
    _replace(rng, cols["currency"], ["XYZ", ""], 0.005)
    _mess_case(rng, cols["status"], 0.05)
    _replace(rng, cols["status"], ["pending_review"], 0.004)
    _mess_dates(rng, cols["paid_at"])
    return _with_duplicates(rng, _with_orphans(rng, cols, "payment_id"))


def _tickets(rng: np.random.Generator, t: Columns) -> Columns:
    """Support tickets: messy categories, priorities, dates and satisfaction scores."""
    n = len(t["customer_id"])
    score = _text(t["score"].astype(int))
    score[rng.random(n) < 0.35] = ""  # a third of the surveys are never answered
    _replace(rng, score, ["0", "11", "4.0", "five"], 0.02)
    cols = {"ticket_id": _text(np.arange(1, n + 1)), "customer_id": _text(t["customer_id"]),
            "opened_at": _stamp(t["at"], True),
            "category": np.array(CATEGORIES, object)[t["category"]],
            "priority": np.array(PRIORITIES, object)[t["priority"]],
            "satisfaction_score": score}
    _mess_case(rng, cols["category"], 0.05)
    _mess_case(rng, cols["priority"], 0.05)
    _replace(rng, cols["category"], ["misc??", "legacy_form"], 0.01)
    _replace(rng, cols["priority"], ["", " ", "  "], 0.01)
    _mess_dates(rng, cols["opened_at"])
    return _with_duplicates(rng, _with_orphans(rng, cols, "ticket_id"))


def generate(n_customers: int, seed: int, id_offset: int = 0) -> Tables:
    """Simulate `n_customers` customers and return the raw tables as columns of text.

    Same arguments, same output. `id_offset` shifts every id, so chunks of one big run can be
    generated separately (see `write_duckdb`).
    """
    if n_customers < 1:
        raise ValueError(f"n_customers must be at least 1, got {n_customers}")
    rng = np.random.default_rng(seed)
    sim = _simulate(n_customers, rng, id_offset)
    tables = {"raw_plans": _plans(rng), "raw_customers": _customers(rng, sim["customers"]),
              "raw_subscriptions": _subscriptions(rng, sim["subscriptions"]),
              "raw_usage_events": _usage(rng, sim["usage"]),
              "raw_payments": _payments(rng, sim["payments"]),
              "raw_support_tickets": _tickets(rng, sim["tickets"])}
    if id_offset:  # row ids of the chunk starting at customer k start at k * 1000
        for name, cols in tables.items():
            key = next(iter(cols))
            if name not in ("raw_plans", "raw_customers"):
                cols[key] = _text(cols[key].astype(np.int64) + id_offset * 1000)
    return tables


def row_count(cols: Columns) -> int:
    """Number of rows of a table given as columns."""
    return len(next(iter(cols.values())))


def write_csv(tables: Tables, out_dir: Path) -> list[Path]:
    """Write each table to `out_dir/<name>.csv` (header row, '\\n' line ends); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, cols in tables.items():
        path = out_dir / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(cols)
            writer.writerows(zip(*cols.values(), strict=True))
        paths.append(path)
    return paths


def write_duckdb(tables: Tables, con: duckdb.DuckDBPyConnection, schema: str = "raw",
                 append: bool = False) -> None:
    """Write each table to `<schema>.<name>` (all VARCHAR) via Arrow; replace unless `append`."""
    import pyarrow as pa  # only needed for this path

    con.execute(f'create schema if not exists "{schema}"')
    for name, cols in tables.items():
        arrow = pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})
        con.register("_pyml_chunk", arrow)
        verb = "insert into {} select" if append else "create or replace table {} as select"
        con.execute(verb.format(f'"{schema}"."{name}"') + " * from _pyml_chunk")
        con.unregister("_pyml_chunk")


def write_scaled_duckdb(path: Path, n_customers: int, seed: int, chunk: int = 50_000,
                        ) -> dict[str, int]:
    """Generate `n_customers` in chunks of `chunk` straight into DuckDB; returns rows per table.

    Chunk k uses seed `seed + k` and an id offset, so memory stays bounded by the chunk size.
    """
    counts: dict[str, int] = {}
    with duckdb.connect(str(path)) as con:
        for k, first in enumerate(range(0, n_customers, chunk)):
            tables = generate(min(chunk, n_customers - first), seed + k, id_offset=first)
            if k:
                del tables["raw_plans"]
            write_duckdb(tables, con, append=k > 0)
            for name, cols in tables.items():
                counts[name] = counts.get(name, 0) + row_count(cols)
    return counts


LEAK_COLUMN = "account_closed_flag"  # the deliberately leaky demo column


def add_label_leak(con: duckdb.DuckDBPyConnection, relation: str = "main.customer_features",
                   target: str = "churned_next_90d", column: str = LEAK_COLUMN,
                   flip_per_mille: int = 5) -> None:
    """Add a column copied from the label (flipped for ~0.5% of rows): a deliberate leak.

    It mimics a status field written after the outcome (NULL where the label is unknown, as
    it would be at scoring time). `pyml profile` must warn about it and `pyml train` must
    refuse it; the demo tests prove both. Not part of the committed demo.
    """
    schema, table = relation.split(".")
    rel = f'"{schema}"."{table}"'
    con.execute(f'alter table {rel} add column "{column}" integer')
    con.execute(f'update {rel} set "{column}" = case when "{target}" is null then null '
                f'when hash(customer_id, as_of_date) % 1000 < {int(flip_per_mille)} '
                f'then 1 - "{target}"::integer else "{target}"::integer end')


def shift_feature(con: duckdb.DuckDBPyConnection, column: str,
                  relation: str = "main.customer_features", factor: float = 3.0) -> None:
    """Multiply one numeric feature by `factor` (a unit change upstream): deliberate drift."""
    schema, table = relation.split(".")
    con.execute(f'update "{schema}"."{table}" set "{column}" = "{column}" * ?', [factor])


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: write CSV seeds and/or raw DuckDB tables."""
    parser = argparse.ArgumentParser(prog="python -m pyml.demo_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="directory for the raw_*.csv seeds")
    parser.add_argument("--customers", type=int, default=3000, help="customers (default 3000)")
    parser.add_argument("--scale", type=int, help="customers for a --duckdb benchmark run")
    parser.add_argument("--duckdb", type=Path, help="DuckDB file to write raw.* tables into")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--leaky", type=Path, metavar="DUCKDB",
                        help="add the leaky column account_closed_flag to main.customer_features "
                             "in this built demo database (to see `pyml profile` / `pyml "
                             "train` catch it)")
    args = parser.parse_args(argv)
    if args.leaky is not None:
        with duckdb.connect(str(args.leaky)) as con:
            add_label_leak(con)
        print(f"added {LEAK_COLUMN} (a copy of churned_next_90d) to main.customer_features "
              f"in {args.leaky}")
        return
    if args.out is None and args.duckdb is None:
        parser.error("give --out DIR and/or --duckdb PATH")
    if args.scale is not None and args.duckdb is None:
        parser.error("--scale needs --duckdb PATH")
    n = args.scale or args.customers
    began = time.perf_counter()
    if args.out is not None:
        tables = generate(n, args.seed)
        for path in write_csv(tables, args.out):
            print(f"wrote {path} ({row_count(tables[path.stem]):,} rows)")
    if args.duckdb is not None:
        counts = write_scaled_duckdb(args.duckdb, n, args.seed)
        for name, rows in counts.items():
            print(f"wrote raw.{name} in {args.duckdb} ({rows:,} rows)")
    print(f"done in {time.perf_counter() - began:.1f}s")


if __name__ == "__main__":
    main()
