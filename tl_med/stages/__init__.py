"""Pipeline stages as plain functions: pretrain on the source site, adapt a target site.

Each stage checks its inputs before it creates anything in MLflow, so bad input leaves no
half-written run or model version. Flows (``flows/``) call these with paths and ids.

Example:
    >>> # ctx = StageContext(ws=ws, cfg=PipelineConfig.profile("demo"), tracker=tracker)
    >>> # src = pretrain_source(ctx, "north", ws.site_manifest("north"))
    >>> # res = adapt_site(ctx, "east", ws.site_manifest("east"), pretrained=src.weights_uri)
"""

from tl_med.stages.adaptation import adapt_site
from tl_med.stages.common import PretrainResult, SiteResult, StageContext, check_trainable, warm_cache
from tl_med.stages.pretrain import pretrain_source

__all__ = ["StageContext", "PretrainResult", "SiteResult", "pretrain_source", "adapt_site", "warm_cache",
           "check_trainable"]
