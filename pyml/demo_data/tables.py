"""The raw tables as they arrive from the source systems: every column text, every table dirty.

`generate` runs the simulation and renders each entity as its raw table, drawing the dirt
from the same seeded generator, so the same arguments give the same tables.
"""

from __future__ import annotations

import numpy as np

from .business import (
    CATEGORIES,
    CHANNELS,
    COUNTRIES,
    CURRENCY,
    EVENT_TYPES,
    LEGACY_PLAN,
    PLANS,
    PRIORITIES,
    SIZES,
    USD_PER_UNIT,
    Columns,
    Tables,
    simulate,
    take,
)
from .dirt import (
    as_text,
    mess_case,
    mess_dates,
    pick,
    replace_some,
    stamp,
    with_duplicates,
    with_orphans,
)

FIRST = ["anna", "ben", "carla", "david", "emma", "felix", "grace", "hugo", "ines", "jonas",
         "kira", "liam", "maya", "noah", "olga", "paul", "rosa", "sam", "tara", "yusuf"]
LAST = ["smith", "garcia", "mueller", "martin", "rossi", "kowalski", "silva", "tanaka", "brown",
        "dubois", "jansen", "lopez", "novak", "olsen", "patel", "schmidt", "weber", "khan"]
DOMAINS = ["example.com", "mail.test", "corp.example", "inbox.test"]


def _plans(rng: np.random.Generator) -> Columns:
    """The plan table: six plans, one repeated row and messy tiers and prices."""
    names = ("plan_code", "plan_name", "monthly_price", "tier")
    cols = {k: np.array([f"{p[i]:.2f}" if i == 2 else p[i] for p in PLANS], object)
            for i, k in enumerate(names)}
    cols["tier"][[1, 3]] = ["Basic", " PRO "]
    cols["plan_code"][5] = "Enterprise "
    cols["monthly_price"][4] = "$149.00"
    return take(cols, np.array([0, 1, 2, 3, 3, 4, 5]))


def _customers(rng: np.random.Generator, c: Columns) -> Columns:
    """Customers with a few older versions of the same id, messy text and dates."""
    n = len(c["customer_id"])
    first, last = rng.integers(0, len(FIRST), n), rng.integers(0, len(LAST), n)
    ids = as_text(c["customer_id"])
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
            "signup_date": stamp(c["signup"], False),
            "acquisition_channel": np.array(CHANNELS, object)[c["channel"]],
            "company_size": np.array(SIZES, object)[c["size"]],
            "marketing_opt_in": opt_in.astype(object), "updated_at": stamp(updated, True)}
    # Older versions of ~3% of customers: an outdated email and country, an earlier updated_at.
    rows = pick(rng, n, 0.03)
    old = take(cols, rows)
    old["email"] = np.array([e.replace("@", ".old@") for e in old["email"]], object)
    old["country"] = np.array(rng.choice(["??", "us", "XX", ""], len(rows)), object)
    old["updated_at"] = stamp(c["signup"][rows] - np.timedelta64(1, "D"), True)
    for col, share in (("email", 0.05), ("full_name", 0.08), ("country", 0.06),
                       ("acquisition_channel", 0.06)):
        mess_case(rng, cols[col], share)
    replace_some(rng, cols["country"], ["??", "", "XX", "u.s."], 0.015)
    replace_some(rng, cols["acquisition_channel"], ["tv_campaign", "", "unknown"], 0.02)
    replace_some(rng, cols["company_size"], ["", "n/a", "5000+"], 0.02)
    replace_some(rng, cols["email"], ["", "not-an-email", "n/a"], 0.01)
    mess_dates(rng, cols["signup_date"])
    merged = {k: np.concatenate([cols[k], old[k]]) for k in cols}
    order = np.lexsort((merged["updated_at"], merged["customer_id"].astype(np.int64)))
    return with_duplicates(rng, take(merged, order))


def _subscriptions(rng: np.random.Generator, s: Columns) -> Columns:
    """Subscriptions, with earlier 'active' versions of some cancelled ones."""
    n = len(s["customer_id"])
    code = np.array([p[0] for p in PLANS], object)[s["plan"]]
    code[s["legacy"]] = LEGACY_PLAN
    cols = {"subscription_id": as_text(np.arange(1, n + 1)),
            "customer_id": as_text(s["customer_id"]), "plan_code": code,
            "started_at": stamp(s["started"], True), "cancelled_at": stamp(s["ended"], True),
            "status": s["status"].astype(object),
            "updated_at": stamp(np.where(np.isnat(s["ended"]), s["started"], s["ended"]), True)}
    cancelled = np.flatnonzero(s["status"] == "cancelled")
    old = take(cols, cancelled[rng.random(len(cancelled)) < 0.3])
    old["cancelled_at"] = np.full(len(old["status"]), "", object)
    old["status"] = np.full(len(old["status"]), "active", object)
    old["updated_at"] = old["started_at"].copy()
    mess_case(rng, cols["plan_code"], 0.05)
    mess_case(rng, cols["status"], 0.05)
    for i in np.flatnonzero(s["status"] == "cancelled")[::40]:
        cols["status"][i] = "canceled"  # the other spelling, from another service
    for col in ("started_at", "cancelled_at"):
        mess_dates(rng, cols[col], impossible=False)
    merged = {k: np.concatenate([cols[k], old[k]]) for k in cols}
    return with_duplicates(rng, merged, 0.01)


def _usage(rng: np.random.Generator, u: Columns) -> Columns:
    """Usage events: messy types, dates and durations, duplicates and orphans."""
    n = len(u["customer_id"])
    minutes = as_text(u["minutes"])
    replace_some(rng, minutes, ["-5", "-1.0", "99999", "", "1e6"], 0.01)
    replace_some(rng, minutes, ["480.0", "720.0", "1440.0"], 0.002)  # all-day sessions: outliers
    cols = {"event_id": as_text(np.arange(1, n + 1)), "customer_id": as_text(u["customer_id"]),
            "event_at": stamp(u["at"], True),
            "event_type": np.array(EVENT_TYPES, object)[u["type"]], "duration_minutes": minutes}
    mess_case(rng, cols["event_type"], 0.04)
    replace_some(rng, cols["event_type"], ["page_view_v0", ""], 0.01)
    mess_dates(rng, cols["event_at"])
    return with_duplicates(rng, with_orphans(rng, cols, "event_id"))


def _payments(rng: np.random.Generator, p: Columns) -> Columns:
    """Payments in the customer's currency: messy amounts, currencies and statuses."""
    n = len(p["customer_id"])
    currency = np.array([CURRENCY.get(c, "USD") for c in np.array(COUNTRIES)[p["country"]]])
    rate = np.array([USD_PER_UNIT[c] for c in currency])
    amount = as_text(np.round(p["usd"] / rate, 2))
    replace_some(rng, amount, ["-50.00", "999999", "", "-0.01", "1000000000"], 0.01)
    for i in pick(rng, n, 0.01):
        amount[i] = f"${amount[i]}" if amount[i] else amount[i]
    cols = {"payment_id": as_text(np.arange(1, n + 1)), "customer_id": as_text(p["customer_id"]),
            "paid_at": stamp(p["at"].astype("datetime64[s]") + rng.integers(
                0, 86400, n).astype("timedelta64[s]"), True),
            "amount": amount, "currency": currency.astype(object),
            "status": np.where(p["ok"], "succeeded", "failed").astype(object)}
    mess_case(rng, cols["currency"], 0.05)
    replace_some(rng, cols["currency"], ["XYZ", ""], 0.005)
    mess_case(rng, cols["status"], 0.05)
    replace_some(rng, cols["status"], ["pending_review"], 0.004)
    mess_dates(rng, cols["paid_at"])
    return with_duplicates(rng, with_orphans(rng, cols, "payment_id"))


def _tickets(rng: np.random.Generator, t: Columns) -> Columns:
    """Support tickets: messy categories, priorities, dates and satisfaction scores."""
    n = len(t["customer_id"])
    score = as_text(t["score"].astype(int))
    score[rng.random(n) < 0.35] = ""  # a third of the surveys are never answered
    replace_some(rng, score, ["0", "11", "4.0", "five"], 0.02)
    cols = {"ticket_id": as_text(np.arange(1, n + 1)), "customer_id": as_text(t["customer_id"]),
            "opened_at": stamp(t["at"], True),
            "category": np.array(CATEGORIES, object)[t["category"]],
            "priority": np.array(PRIORITIES, object)[t["priority"]],
            "satisfaction_score": score}
    mess_case(rng, cols["category"], 0.05)
    mess_case(rng, cols["priority"], 0.05)
    replace_some(rng, cols["category"], ["misc??", "legacy_form"], 0.01)
    replace_some(rng, cols["priority"], ["", " ", "  "], 0.01)
    mess_dates(rng, cols["opened_at"])
    return with_duplicates(rng, with_orphans(rng, cols, "ticket_id"))


def generate(n_customers: int, seed: int, id_offset: int = 0) -> Tables:
    """Simulate `n_customers` customers and return the raw tables as columns of text.

    Same arguments, same output. `id_offset` shifts every id, so chunks of one big run can be
    generated separately (see `write_duckdb`).
    """
    if n_customers < 1:
        raise ValueError(f"n_customers must be at least 1, got {n_customers}")
    rng = np.random.default_rng(seed)
    sim = simulate(n_customers, rng, id_offset)
    tables = {"raw_plans": _plans(rng), "raw_customers": _customers(rng, sim["customers"]),
              "raw_subscriptions": _subscriptions(rng, sim["subscriptions"]),
              "raw_usage_events": _usage(rng, sim["usage"]),
              "raw_payments": _payments(rng, sim["payments"]),
              "raw_support_tickets": _tickets(rng, sim["tickets"])}
    if id_offset:  # row ids of the chunk starting at customer k start at k * 1000
        for name, cols in tables.items():
            key = next(iter(cols))
            if name not in ("raw_plans", "raw_customers"):
                cols[key] = as_text(cols[key].astype(np.int64) + id_offset * 1000)
    return tables
