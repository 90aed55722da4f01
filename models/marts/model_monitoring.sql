with

monitoring as (

    select * from {{ pyml.relation_or_empty(source('ml', 'monitoring'), {
        'model_name': 'varchar',
        'version': 'integer',
        'relation': 'varchar',
        'window_label': 'varchar',
        'window_start': 'timestamp',
        'window_end': 'timestamp',
        'rows': 'bigint',
        'feature': 'varchar',
        'kind': 'varchar',
        'metric': 'varchar',
        'value': 'double',
        'threshold': 'double',
        'alert': 'boolean',
        'computed_at': 'timestamp',
    }, hint='run `pyml monitor` first') }}

),

per_feature as (

    -- One row per model version, window and feature: the statistics side by side.
    select
        model_name,
        version as model_version,
        window_label,
        window_start,
        window_end,
        feature,
        kind,
        max(rows) as rows_count,
        max(value) filter (where metric = 'psi') as psi,
        max(value) filter (where metric = 'wasserstein') as wasserstein,
        max(value) filter (where metric = 'jensen_shannon') as jensen_shannon,
        max(value) filter (where metric = 'ks') as ks,
        max(value) filter (where metric = 'hellinger') as hellinger,
        max(value) filter (where metric = 'unseen_share') as unseen_share,
        max(value) filter (where metric = 'null_share') as null_share,
        max(value) filter (where metric = 'estimated_roc_auc') as estimated_roc_auc,
        max(value) filter (where metric = 'realised_roc_auc') as realised_roc_auc,
        count(*) filter (where alert) as alerts_count,
        string_agg(metric, ', ' order by metric) filter (where alert) as alerting_metrics,
        max(computed_at) as computed_at

    from monitoring
    group by all

),

final as (

    select
        *,
        alerts_count > 0 as is_alerting
    from per_feature

)

select * from final
