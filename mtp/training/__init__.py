"""Head training: typed config, MTP losses and metrics, the accelerate trainer."""
from mtp.training.config import ConfigError, TrainConfig, load_config
from mtp.training.losses import expected_tau, mtp_losses
from mtp.training.trainer import ResumeError, Trainer, train

__all__ = ["ConfigError", "TrainConfig", "load_config", "expected_tau", "mtp_losses", "ResumeError", "Trainer", "train"]
