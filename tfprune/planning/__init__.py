"""Planning: per-group channel targets that meet a budget at least predicted loss.

`ChannelPlan` holds kept channels per group; `CostModel` predicts a cost
(latency, MACs, parameters) from them, built by measuring one-layer models
(`measure_sites`, `count_site_costs`); `allocate` chooses the counts;
`ScoreSensitivity` and `MeasuredSensitivity` predict the accuracy loss;
`candidate_plans` gives several plans meeting one budget and `PlanEvaluator`
measures each on validation data (BatchNorm re-estimated first).
Latency tables are measured by `tflite_export.latency_table` (tfprune does
not run converters or runtimes); `prune_channels(..., plan=plan)` follows a
plan during fine-tuning.
"""

from tfprune.planning.allocator import Allocation, allocate, floor_count
from tfprune.planning.candidates import Candidate, candidate_plans, uniform_plan
from tfprune.planning.channel_plan import ChannelPlan, group_key
from tfprune.planning.cost_model import (
    CostModel,
    SiteCost,
    count_site_costs,
    grid_levels,
    measure_sites,
)
from tfprune.planning.plan_evaluation import PlanEvaluator, prune_to_plan, recalibrate_batch_norm
from tfprune.planning.sensitivity import MeasuredSensitivity, ScoreSensitivity
