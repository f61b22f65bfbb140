"""The analysis engine: pure functions over a model, a task, a batch and site names.

Everything is driven by the site contract (`SiteSpec` kinds, `distribution` flags,
`component_groups()`), never by architecture, so every registered model is analysed
the same way. Each long-running function takes `progress: Callable[[float], None]`.
"""
# Bumped whenever an analysis's numbers or their meaning change (2: the factorial reliance
# design with necessity, sufficiency and interval-bound verdicts). The server keys stored
# results by it, so a result computed by an older engine is never served as a new one.
ANALYSIS_VERSION = 2

from .ablation import MODES, AblationResult, AblationSpec, run_ablations
from .attribution import AttributionResult, agreement, attribution_patch, verify_attribution
from .entropy import EntropyResult, SiteEntropy, weight_entropy
from .gradients import GradientResult, GradientSeriesPoint, gradient_flow, gradient_flow_series
from .patching import PatchingResult, patch_sweep, patch_sweep_naive
from .reliance import RelianceResult, reliance
from .report import Report, analyze
from .trace import SiteRecord, TraceResult, run_trace
from .utilization import UtilizationResult, utilization

__all__ = [
    "ANALYSIS_VERSION",
    "MODES", "AblationResult", "AblationSpec", "run_ablations",
    "AttributionResult", "agreement", "attribution_patch", "verify_attribution",
    "EntropyResult", "SiteEntropy", "weight_entropy",
    "GradientResult", "GradientSeriesPoint", "gradient_flow", "gradient_flow_series",
    "PatchingResult", "patch_sweep", "patch_sweep_naive",
    "RelianceResult", "reliance",
    "Report", "analyze",
    "SiteRecord", "TraceResult", "run_trace",
    "UtilizationResult", "utilization",
]
