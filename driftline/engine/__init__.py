"""driftline's engine: pure and batch-native (numpy and scipy in, plain data out).

No Kafka, ClickHouse, HTTP or MLflow here, and no clock that is not handed in; a test asserts that
importing it pulls none of them in. Driven with columnar batches, never one event at a time.
"""

from driftline.engine.assess import Assessment, AssessmentPolicy, Threshold, assess
from driftline.engine.features import FeatureSet
from driftline.engine.monitor import ModelMonitor, WindowReport, evaluate_counts
from driftline.engine.policy import AlertPolicy, Decider, RollbackPolicy
from driftline.engine.profile import ReferenceProfile, build_profile
from driftline.engine.stats import FeatureStats
from driftline.engine.window import ClosedWindow, WindowSpec, WindowState, window_id

__all__ = [
    "AlertPolicy", "Assessment", "AssessmentPolicy", "ClosedWindow", "Decider", "FeatureSet", "FeatureStats",
    "ModelMonitor", "ReferenceProfile", "RollbackPolicy", "Threshold", "WindowReport", "WindowSpec", "WindowState",
    "assess", "build_profile", "evaluate_counts", "window_id",
]
