"""The body of each report section (HTML fragments) from the results tables.

The page itself (section order, ids, the one line of single-run sections) is assembled in
:mod:`.report`; the display tables come from :mod:`.display`, the wording from :mod:`.wording`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from compcars_kedro.names import BASELINE, FINETUNED
from compcars_kedro.reporting import html as H
from compcars_kedro.reporting.display import (
    claims_lines,
    config_value,
    configs_of,
    headline_table,
    of_config,
    seeds_table,
    split_table,
)
from compcars_kedro.reporting.paired import p_text
from compcars_kedro.reporting.params import ReportingParams
from compcars_kedro.reporting.tables import CONFIG_KEYS, config_label, metric_label
from compcars_kedro.reporting.wording import MODE_TEXT, method_text, num

HEADLINE_METRICS = ("ari", "ami", "mean_average_precision_at_r")


def figures(pay: Mapping[str, Any] | None, empty_text: str) -> str:
    """A figure payload's notes and embedded figures (``empty_text`` when there are none)."""
    if not pay:
        return H.note(empty_text)
    parts = [H.note(n) for n in pay.get("notes", [])]
    figs = pay.get("figures", [])
    parts += [H.image(f["png"], f.get("caption", ""), alt=f.get("name", ""),
                      fig_id="fig-" + f.get("name", "").removesuffix(".png")) for f in figs]
    if not parts:
        parts.append(H.note(empty_text))
    return "\n".join(parts)


# --------------------------------------------------------------------------- replicates
def replicates_text(metrics_long: pd.DataFrame | None, run_summary: pd.DataFrame,
                    split_summary: Mapping[str, Any] | None) -> str:
    """What varied between the replicates counted as ``n`` (training seed, split seed)."""
    split_seed = ((split_summary or {}).get("params") or {}).get("seed")
    seeds = sorted(set(run_summary["seed"])) if not run_summary.empty else []
    split_seeds: list[Any] = []
    if metrics_long is not None and "replicate" in metrics_long:  # "s0/split42" names
        split_seeds = sorted({int(r.split("/split")[1]) for r in metrics_long["replicate"]
                              if isinstance(r, str) and "/split" in r})
    seed_text = (f"training seed varied over {', '.join(map(str, seeds))}" if len(seeds) > 1
                 else f"training seed fixed at {seeds[0]}" if seeds else "no run")
    if len(split_seeds) > 1:
        split_text = f"class-split seed varied over {', '.join(map(str, split_seeds))}"
    else:
        fixed = split_seeds[0] if split_seeds else split_seed
        split_text = (f"class split fixed (split seed {fixed})" if fixed is not None
                      else "class split fixed")
    return f"{seed_text}; {split_text}"


# --------------------------------------------------------------------------- the answer
def headline_config(tables: Mapping[str, pd.DataFrame]) -> tuple[dict[str, Any] | None, str]:
    """The configuration the headline quotes and the rule that chose it."""
    configs = configs_of(tables)
    best = tables.get("best_configuration", pd.DataFrame())
    if len(configs) == 1:
        return configs.iloc[0].to_dict(), "the only configuration run"
    if best is not None and not best.empty and pd.notna(best["configuration"].iloc[0]):
        b = best.iloc[0]
        return ({k: b[k] for k in CONFIG_KEYS},
                f"chosen by {b['rule']} (val = {num(b['val_mean'])}, n = {int(b['val_n'])})")
    if len(configs):
        return configs.iloc[0].to_dict(), "first configuration (no val metric to choose on)"
    return None, "no run"


def answer_section(tables: Mapping[str, pd.DataFrame], headline: Mapping[str, str],
                   replicates: str, p: ReportingParams) -> str:
    """One paragraph with the answer, the headline table, and the paired tests."""
    comparison = tables["comparison"]
    config, rule = headline_config(tables)
    if config is None:
        return H.note("no results: nothing to report yet (run `kedro run`)")
    table = headline_table(comparison, config)
    n = int(table["n"].max()) if len(table) else 0
    text = _answer_text(comparison, config, rule, headline, replicates, n, p)
    parts = [H.paragraph(text, cls="key"), H.table(table, table_id="headline-table")]
    imp = tables.get("improvement", pd.DataFrame())
    if imp is not None and not imp.empty and n >= 2:
        tests = _paired_tests(imp, config)
        if tests:
            parts.append(H.paragraph("Fine-tuned vs baseline, paired t-test over replicates: "
                                     + "; ".join(tests) + "."))
    return "\n".join(parts)


def _answer_text(comparison: pd.DataFrame, config: Mapping[str, Any], rule: str,
                 headline: Mapping[str, str], replicates: str, n: int,
                 p: ReportingParams) -> str:
    def change(models: str, metric: str) -> str:
        b = config_value(comparison, config, models, BASELINE, metric)
        f = config_value(comparison, config, models, FINETUNED, metric)
        if pd.isna(b) and pd.isna(f):
            return f"{metric_label(metric)} –"
        return f"{metric_label(metric)} {num(b)} → {num(f)}"

    unseen = [change("unseen", m) for m in HEADLINE_METRICS]
    seen = [change("seen", m) for m in HEADLINE_METRICS]
    return (f"Fine-tuning {config_label(config)} moves the clusters of unseen car models "
            f"({', '.join(unseen)}) and of seen car models ({', '.join(seen)}), baseline → "
            f"fine-tuned. Seen = the test split (models trained on, images never seen); unseen "
            f"= models held out of training. Configuration: {rule}. Clustering: "
            f"{method_text(headline)}. n = {n} replicate(s): {replicates}"
            + ("; one replicate gives no interval and no test." if n < 2 else
               f"; brackets = {p.confidence:.0%} Student-t interval over replicates."))


def _paired_tests(improvement: pd.DataFrame, config: Mapping[str, Any]) -> list[str]:
    """``<models> <metric> p = ...`` of the quoted configuration's headline metrics."""
    sel = of_config(improvement[improvement["metric"].isin(list(HEADLINE_METRICS))], config)
    return [f"{r['models']} {metric_label(r['metric'])} {p_text(r['p_value'])}"
            for _, r in sel.iterrows()]


# --------------------------------------------------------------------------- data
def data_section(data_info: Mapping[str, Any] | None, split_summary: Mapping[str, Any] | None
                 ) -> str:
    """The raw data, its kind, counts and weights, then the table of splits."""
    pairs = _data_pairs(dict(data_info or {})) + _split_pairs(dict(split_summary or {}))
    parts = [H.key_values(pairs)]
    split = split_table(split_summary)
    if not split.empty:
        parts.append(H.table(split))
    return "\n".join(parts)


def _data_pairs(info: Mapping[str, Any]) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = [
        ("raw data", info.get("raw_path") or "unknown (no raw source given to the report)"),
        ("kind", info.get("kind_text", "unknown")),
    ]
    if info.get("images_total") is not None:
        pairs.append(("images kept (all splits)", info["images_total"]))
    if info.get("models_seen") is not None or info.get("models_unseen") is not None:
        pairs.append(("car models", f"{info.get('models_seen', '–')} seen in training, "
                                    f"{info.get('models_unseen', '–')} held out (unseen)"))
    sample = info.get("sample") or {}
    if sample:
        pairs.append(("sample generator", f"{sample.get('images_on_disk', '–')} images on disk "
                      f"({sample.get('images_planted', 0)} planted edge cases), "
                      f"{sample.get('makes', '–')} makes, {sample.get('models', '–')} models"))
    weights = info.get("weights") or {}
    pairs.append(("weights", "; ".join(f"{k}: {v}" for k, v in weights.items()) or "unknown"))
    return pairs


def _split_pairs(summary: Mapping[str, Any]) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    if summary.get("pairing"):
        pairs.append(("view pairing", summary["pairing"]))
    dups = summary.get("near_duplicate_groups") or {}
    if dups:
        pairs.append(("near-duplicate groups", f"{dups.get('groups', 0)} groups of "
                      f"{dups.get('images_in_groups', 0)} images ({dups.get('method', '?')}, "
                      "each group kept in one split)"))
    return pairs


# --------------------------------------------------------------------------- claims
CLAIMS_TEXT = ("Each claim of the original study as a paired difference A − B of fine-tuned "
               "models: runs are matched on the other settings and on the replicate (seed), the "
               "per-replicate differences give the mean, its Student-t interval and a paired "
               "t-test. The verdict comes from the test, never from overlapping intervals.")


def claims_section(claims: pd.DataFrame, clip_claims: pd.DataFrame | None) -> str:
    """The tested claims' table and one line per claim these runs cannot test."""
    frames = [f for f in (claims, clip_claims) if f is not None and not f.empty]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    lines, shown = claims_lines(table)
    parts = [H.paragraph(CLAIMS_TEXT)]
    if lines:
        parts.append("<h3>Not testable with these runs</h3>" + H.bullet_list(lines))
    if not shown.empty:
        parts.append(H.table(shown, table_id="claims-table"))
    return "\n".join(parts)


# --------------------------------------------------------------------------- protocol
def protocol_section(tables: Mapping[str, pd.DataFrame], headline: Mapping[str, str],
                     headline_notes: Sequence[str], split_summary: Mapping[str, Any] | None,
                     finetuning_config: Mapping[str, Any] | None, parameters: Mapping[str, Any],
                     p: ReportingParams, figure_run: str, replicates: str) -> str:
    """Excluded images and data parameters, runs and seeds, evaluation, the run's training."""
    parts = _split_parts(split_summary)
    parts.append("<h3>Runs and replicates</h3>")
    parts.append(H.table(seeds_table(tables["run_summary"])))
    seeds = [("what varied", replicates),
             ("data split seed", (split_summary or {}).get("params", {}).get("seed", "–")),
             ("clustering seed", (parameters.get("clustering") or {}).get("seed", "–")),
             ("2-D map seed", p.scatter.seed)]
    parts.append(H.key_values(seeds))
    parts.append("<h3>Evaluation</h3>")
    parts.append(H.bullet_list(_evaluation_items(tables["clustering_methods"], headline, p,
                                                 figure_run)))
    parts.extend(H.note(n) for n in headline_notes)
    if finetuning_config:
        parts.append("<h3>Training of that run</h3>")
        parts.append(H.key_values(_training_pairs(finetuning_config)))
    return "\n".join(parts)


def _split_parts(split_summary: Mapping[str, Any] | None) -> list[str]:
    if not split_summary:
        return [H.note("no split summary given")]
    parts = []
    excluded = split_summary.get("excluded") or {}
    if excluded:
        parts.append(H.paragraph("Excluded images: " + ", ".join(
            f"{k}: {v}" for k, v in excluded.items())))
    dp = split_summary.get("params", {})
    if dp:
        parts.append(H.key_values([(k, v) for k, v in dp.items() if not isinstance(v, dict)]))
    return parts


def _evaluation_items(methods: pd.DataFrame, headline: Mapping[str, str], p: ReportingParams,
                      figure_run: str) -> list[str]:
    modes = list(dict.fromkeys(methods["selection_mode"])) if not methods.empty else []
    reducers = sorted(set(methods["reducer"])) if not methods.empty else []
    clusterers = sorted(set(methods["clusterer"])) if not methods.empty else []
    return [
        "Retrieval: every sample of a split queries all others of the same split (itself "
        "excluded); P@1, R-precision and MAP@R against the true car model.",
        "Baseline = the starting backbone's embedding before any training step (pretrained "
        "weights or the seeded random initialisation); fine-tuned = the checkpoint with the best "
        "val MAP@R.",
        f"Clustering grid: reducers {', '.join(reducers) or '–'}; clusterers "
        f"{', '.join(clusterers) or '–'} (kmeans is given the true number of models: a "
        "labelled reference, not a discovery result).",
        *[f"Selection mode {MODE_TEXT.get(m, m)}" for m in modes],
        f"Quoted clustering method (answer, comparisons, maps, galleries): {method_text(headline)}"
        ". Headline clustering metrics: ARI and AMI, each with the noise fraction (NMI is not "
        "used: with noise points as singletons an all-noise answer scores about 0.8).",
        f"Choices: the best configuration is chosen on val ({p.best_configuration.metric}); its "
        "test and unseen numbers are reported. Nothing is chosen on the split it reports.",
        f"Statistics: mean over replicates with a two-sided {p.confidence:.0%} Student-t "
        "interval (mean ± t·s/√n, s with ddof = 1); NaN values are dropped first; with one "
        "replicate the interval is undefined (shown as –). Differences between configurations "
        f"are paired by replicate and tested with a paired t-test (α = {p.alpha}); 'not "
        "separable' always comes from that test. Improvement % = per-replicate 100·(fine-tuned − "
        f"baseline)/baseline, only for metrics with a direction and a baseline above "
        f"{p.improvement_epsilon}.",
        f"Embedding-level figures (maps, galleries, confusion matrix) show run {figure_run}.",
    ]


def _training_pairs(finetuning_config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    t = finetuning_config.get("training", {})
    m = finetuning_config.get("model", {})
    return [
        ("variant", finetuning_config.get("variant", "–")),
        ("backbone / weights", f"{m.get('name', '–')} / {m.get('weights') or 'random init'}"),
        ("image size / views", f"{m.get('image_size', '–')} / {'+'.join(m.get('views', []))}"),
        ("head / embedding dim", f"{m.get('head', '–')} / {m.get('embedding_dim', '–')}"),
        ("loss", (finetuning_config.get("loss") or {}).get("name", "–")),
        ("epochs / batch size", f"{t.get('epochs', '–')} / {t.get('batch_size', '–')}"),
        ("learning rates (backbone / head)", f"{t.get('lr_backbone', '–')} / {t.get('lr_head', '–')}"),
        ("training seed", t.get("seed", "–")),
    ]
