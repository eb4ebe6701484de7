"""docs/kubernetes-executor.yaml is a config Flower 1.42's SuperExec Kubernetes executor really accepts.

The executor's factory reads a fixed set of keys and silently ignores the rest, so a misspelt
key would deploy without its setting: the test checks every key against that set, then builds
the executor's own config object from the file (its validation of env, volumes and mounts).
No Kubernetes cluster is involved.
"""

from __future__ import annotations

from pathlib import Path

from flwr.supercore.constant import ExecutorType
from flwr.supercore.superexec.executor import KubernetesExecutorConfig, factory
from flwr.supercore.superexec.executor.config import load_executor_config

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "kubernetes-executor.yaml"
# Read by factory._kubernetes_executor_config_from_mapping besides its field map.
OTHER_KEYS = {"namespace", "image", "appio-root-certificates-path", "warm-executor-pools"}


def test_the_example_uses_only_keys_the_kubernetes_executor_reads():
    config = load_executor_config(str(EXAMPLE), ExecutorType.KUBERNETES)
    known = set(factory._KUBERNETES_CONFIG_FIELD_MAP) | OTHER_KEYS
    assert set(config) <= known, set(config) - known


def test_the_example_builds_the_executors_config_with_every_setting():
    config = load_executor_config(str(EXAMPLE), ExecutorType.KUBERNETES)
    built = factory._kubernetes_executor_config_from_mapping(config)
    assert isinstance(built, KubernetesExecutorConfig)
    assert built.namespace == config["namespace"] and built.image == config["image"]
    for key, field in factory._KUBERNETES_CONFIG_FIELD_MAP.items():
        if key in config:
            assert getattr(built, field) == config[key], key
    assert {"name": "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "value": "1"} in built.env
