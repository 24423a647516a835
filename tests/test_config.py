"""The step schedule is resolved by ScanConfig, the same from Python as from the CLI."""
import pytest

from scanner.config import ScanConfig
from scanner.errors import ConfigError


def test_default_is_the_weight_controlled_schedule():
    config = ScanConfig()
    assert (config.step_schedule, config.largest_step) == ("adaptive", 0.02)
    assert ScanConfig(delta=0.05).largest_step == 0.05      # never below delta
    assert ScanConfig(adaptive_step=0.01).largest_step == 0.01


@pytest.mark.parametrize("fields, schedule", [
    (dict(exact=True), "fixed"),
    (dict(fixed_step=True), "fixed"),
    (dict(relative_step=0.1), "relative"),
    (dict(method="ured"), "fixed"),        # fixed weights: Algorithm 1's steps
    (dict(method="pred"), "fixed"),
])
def test_other_schedules_need_no_extra_field(fields, schedule):
    config = ScanConfig(**fields)
    assert config.step_schedule == schedule and config.largest_step is None
    assert config.as_dict()["step_schedule"] == schedule and config.as_dict()["largest_step"] is None


@pytest.mark.parametrize("fields", [
    dict(adaptive_step=0.02, exact=True),
    dict(adaptive_step=0.02, fixed_step=True),
    dict(adaptive_step=0.02, relative_step=0.1),
    dict(adaptive_step=1e-4, delta=1e-3),
    dict(exact=True, crossing_resolution=1e-4),
])
def test_contradictory_schedules_are_refused(fields):
    with pytest.raises(ConfigError, match="invalid scan parameter"):
        ScanConfig(**fields)


def test_weight_update_length_applies_to_the_default_schedule_only():
    assert ScanConfig().adaptive_weight_update_length == 1e-4
    assert ScanConfig(fixed_step=True).adaptive_weight_update_length is None
    assert ScanConfig(exact=True).adaptive_weight_update_length is None
    assert ScanConfig(method="ured").adaptive_weight_update_length is None
    with pytest.raises(ConfigError):
        ScanConfig(weight_update_length=0.0)


def test_the_config_resolves_to_one_schedule_object():
    from scanner.schedules import FixedStep, RelativeStep, WeightControlledStep
    assert ScanConfig().schedule == WeightControlledStep(1e-3, largest=0.02, crossing_resolution=1e-3,
                                                         weight_update_length=1e-4)
    assert ScanConfig(adaptive_step=0.05, crossing_resolution=1e-4).schedule == WeightControlledStep(
        1e-3, largest=0.05, crossing_resolution=1e-4, weight_update_length=1e-4)
    assert ScanConfig(fixed_step=True, delta=0.02, crossing_resolution=0.002).schedule == FixedStep(0.02, 0.002)
    assert ScanConfig(exact=True).schedule == FixedStep(1e-3)
    assert ScanConfig(method="pred", delta=0.02).schedule == FixedStep(0.02)
    assert ScanConfig(relative_step=0.05, delta=0.005).schedule == RelativeStep(0.005, 0.05)
