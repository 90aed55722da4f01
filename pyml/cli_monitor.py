"""`pyml monitor`: its click command (cli.py registers it; it stays out of cli.py for size)."""

from __future__ import annotations

import click

from pyml.cliopts import INT, handle_errors, project_options, selection_options


@click.command()
@selection_options
@click.option("--version", "version", type=INT,
              help="monitor this version (default: the champion).")
@project_options
@handle_errors
def monitor(models: tuple[str, ...], select: tuple[str, ...], version: int | None,
            project_dir: str | None, profiles_dir: str | None, target: str | None,
            lock_timeout: float) -> None:
    """Monitor the relation each model scores, per time window, into ml.monitoring.

    Windows come from the spec's monitor.time_column (monitor.window: day, week, month,
    quarter or year; default: the whole relation). Per window and feature, against the
    version's training snapshot: PSI, KS, normalised Wasserstein, Jensen-Shannon and
    Hellinger (numeric); PSI, chi2, Jensen-Shannon, L-infinity and unseen share
    (categorical); null shares; the same for the prediction itself (__prediction__); for
    binary models the label-free performance estimate beside the realised one where labels
    exist (__model__). A rerun replaces its windows. Prints one line per statistic above
    its threshold (monitor.thresholds; defaults psi 0.2, unseen_share 0.1,
    null_share_change 0.1; wasserstein, jensen_shannon and the rest alert only when given one)
    and exits with code 2 when any fires. A window with fewer rows than monitor.min_rows
    (200) is recorded but never alerts.

    Example: pyml monitor churn
    """
    from pyml.api import monitor as run_monitor
    from pyml.errors import DriftDetected
    from pyml.verbs.monitor import alert_line, verdict

    found = None
    try:
        results = run_monitor(models, select=select, version=version, project_dir=project_dir,
                              profiles_dir=profiles_dir, target=target,
                              log=lambda m: click.echo(m, err=True), lock_timeout=lock_timeout,
                              fail_on_alert=True)
    except DriftDetected as e:
        found, results = e, list(e.results)  # the alerts are printed first, then the finding
    for r in results:
        for row in r.alerts:
            click.echo(alert_line(r, row))
        click.echo(verdict(r))
    if found is not None:
        raise found
