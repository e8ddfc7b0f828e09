"""The deployment YAML: the example is valid, and every kind of broken file is refused with exit 2,
a message that names the key path and what is allowed, and no traceback.

The CLI runs as a real subprocess (`mlrp config check FILE`), the way an admin runs it; `parse()`
is also called directly for the same mistakes, and for a few the files do not cover.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import run_mlrp

from config.example import example_text
from config.loading import examine
from config.node_limits import Node, beyond_node, node_memory
from config.render import node_inventory
from config.schema import ConfigError, MLRPConfig, load, parse
from spawners.gpus import discover_nvml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "examples" / "single-node.yaml"
BAD = Path(__file__).parent / "bad_configs"
SLUG_RULE = "(must match ^[a-z0-9][a-z0-9-]{0,39}$)"
GPUS_RULE = (
    "must be a whole number of GPUs from 0 to 64, "
    "or a mapping such as {choices: [1, 2], default: 1}"
)

NVML_PRESENT = discover_nvml() is not None
needs_no_nvml = pytest.mark.skipif(NVML_PRESENT, reason="NVML present")

# bad_configs/five_mistakes.yaml: every one of them, in one run.
FIVE_MISTAKES = [
    "hub.port: Input should be a valid integer, unable to parse string as an integer",
    "profiles[0].memmory: unknown key; did you mean 'memory'?",
    "profiles[1].cpus: true/false is not allowed here; got True",
    "profiles[1].memory: memory must be a size such as 4G or 512M; got '16 gigs'",
    "profiles[1] (gpu).groups: no group 'studnets'; groups defined: students; did you mean "
    "'students'?",
]

# Every file in bad_configs/ and the lines its check must print (key path + what is allowed).
EXPECTED: dict[str, list[str]] = {
    "yaml_syntax_error.yaml": ["line 4, column 6: mapping values are not allowed here"],
    "top_level_list.yaml": ["(top level): must be a mapping of sections (hub, profiles…)"],
    "unknown_top_level_key.yaml": ["profile: unknown key; did you mean 'profiles'?"],
    "unknown_profile_key.yaml": ["profiles[1].gpu: unknown key; did you mean 'gpus'?"],
    "port_wrong_type.yaml": ["hub.port: Input should be a valid integer"],
    "port_out_of_range.yaml": ["hub.port: Input should be less than or equal to 65535"],
    "gpus_negative.yaml": [f"profiles[0].gpus: {GPUS_RULE}; got -1"],
    "gpus_too_many.yaml": [f"profiles[0].gpus: {GPUS_RULE}; got 1000"],
    "gpus_word.yaml": [f"profiles[0].gpus: {GPUS_RULE}; got 'one'"],
    "gpus_default_not_in_choices.yaml": [
        "profiles[0].gpus: default 4 is not one of choices [1, 2]"
    ],
    "missing_image.yaml": [
        "profiles[0] (cpu).image: no image 'pytorch'",
        "images defined: default",
    ],
    "missing_group.yaml": [
        "profiles[0] (cpu).groups: no group 'staff'",
        "groups defined: students",
    ],
    "duplicate_slugs.yaml": ["profiles[1] (cpu).slug: 'cpu' is used by two profiles"],
    "slug_shell.yaml": [f"profiles[0].slug: 'a; rm -rf /' is not allowed here {SLUG_RULE}"],
    "slug_template.yaml": [f"profiles[0].slug: '{{{{7*7}}}}' is not allowed here {SLUG_RULE}"],
    "memory_words.yaml": [
        "profiles[0].memory: memory must be a size such as 4G or 512M; got 'lots'"
    ],
    "empty_profiles.yaml": ["profiles: List should have at least 1 item"],
    "more_gpus_than_devices.yaml": [
        "profiles[1] (gpu4).gpus: asks for up to 4 GPU(s) but this node has 2 (from gpus.devices)",
        "lower it to 2 or fewer",
    ],
    "nvml_required.yaml": ["gpus.source:", "NVML is not available on this node"],
    "accounts_prefix.yaml": [
        "accounts.prefix: 'Root_' is not allowed here (must match ^[a-z][a-z0-9]{0,7}-$)"
    ],
    "devices_twice.yaml": ["gpus.devices: each GPU may be listed only once"],
    "image_not_in_catalog.yaml": [
        "images.torch.catalog: no image 'cuda-pytorh' in the catalog (mlrp images list); did "
        "you mean 'cuda-pytorch'?",
        "gpus.driver: '570' is not allowed here",
    ],
    "slurm_driver_garbled.yaml": ["slurm.nvidia_driver: 'latest' is not allowed here"],
    "tls_both.yaml": [
        "hub.tls: set either cert and key (your certificate) or self_signed: true, not both"
    ],
    "tls_cert_without_key.yaml": ["hub.tls: give both cert and key (PEM files), or neither"],
    "tls_missing_file.yaml": ["hub.tls: /nonexistent/cert.pem: no such file"],
    "plain_http_on_network.yaml": [
        "hub: ip: listening on 0.0.0.0 over plain HTTP would send passwords across the network "
        "in clear. Set hub.tls"
    ],
    "umask_unquoted.yaml": [
        'accounts.umask: write the umask in quotes, e.g. umask: "077" (unquoted, YAML read the '
        "number 63)"
    ],
    "max_processes_tiny.yaml": [
        "profiles[0].max_processes: Input should be greater than or equal to 16"
    ],
    "five_mistakes.yaml": FIVE_MISTAKES,
}
NEEDS_NO_NVML = {"nvml_required.yaml"}


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return run_mlrp("config", "check", str(path), timeout=60)


def problems_of(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data, "test.yaml")
    return info.value.problems


def cpu(**extra: Any) -> dict[str, Any]:
    return {"slug": "cpu", "name": "CPU only", **extra}


# --- the example -------------------------------------------------------------------------------


def test_example_is_valid_and_check_names_its_profiles() -> None:
    result = check(EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert "valid. 1 profile(s): cpu" in result.stdout
    assert result.stderr == ""


def test_example_documents_the_defaults() -> None:
    """The example says it shows every key "with its default unless noted"."""
    from_file = load(EXAMPLE)
    defaults = parse({"profiles": [cpu()]})
    for section in ("hub", "login", "accounts", "gpus", "idle_culler"):
        assert getattr(from_file, section) == getattr(defaults, section), section


def test_examples_commented_profiles_are_valid_when_uncommented(tmp_path: Path) -> None:
    lines = EXAMPLE.read_text().splitlines()
    uncommented = [re.sub(r"^  # ( |-)", r"  \1", line) for line in lines]
    assert uncommented != lines
    data = yaml.safe_load("\n".join(uncommented))
    assert [p["slug"] for p in data["profiles"]] == ["cpu", "gpu1", "multi-gpu"]
    data["gpus"] = {"source": "config", "devices": [0, 1, 2, 3]}
    cfg = parse(data)
    assert node_inventory(cfg).ids == ["0", "1", "2", "3"]
    assert cfg.profiles[2].gpu_choices == [2, 4]


# --- the Slurm cluster examples ----------------------------------------------------------------

EXAMPLES = EXAMPLE.parent
CLUSTER_EXAMPLES = {
    "closet-cluster.yaml": ["cpu", "gpu"],
    "university-cluster.yaml": ["debug", "gpu", "vision"],
}


@pytest.mark.parametrize(("name", "slugs"), sorted(CLUSTER_EXAMPLES.items()))
def test_cluster_examples_are_valid_and_check_names_their_profiles(
    name: str, slugs: list[str]
) -> None:
    result = check(EXAMPLES / name)
    assert result.returncode == 0, result.stderr
    assert f"valid. {len(slugs)} profile(s): {', '.join(slugs)};" in result.stdout
    assert "https://0.0.0.0:" in result.stdout  # served to the network, over TLS


@pytest.mark.parametrize("name", sorted(CLUSTER_EXAMPLES))
def test_cluster_examples_check_without_warnings(name: str) -> None:
    assert check(EXAMPLES / name).stderr == ""


@pytest.mark.parametrize("name", sorted(CLUSTER_EXAMPLES))
def test_cluster_examples_render_onto_the_slurm_backend(name: str, tmp_path: Path) -> None:
    """Every Slurm profile names its partition and walltime, starts may wait in a queue, and
    the jobs reach the hub API at slurm.hub_api_address."""
    from traitlets.config import Config

    from config.render import configure

    cfg = load(EXAMPLES / name)
    assert cfg.slurm is not None and cfg.slurm.hub_api_address is not None
    assert cfg.accounts.mode == "existing"
    assert cfg.hub.start_timeout >= 1800  # queue waits; the default 120 is for local servers
    slurm = [p for p in cfg.profiles if p.backend == "slurm"]
    assert slurm and all({"partition", "walltime"} <= set(p.placement) for p in slurm)
    c = Config()
    configure(
        c, cfg.model_copy(update={"hub": cfg.hub.model_copy(update={"data_dir": tmp_path})}), None
    )
    api = f"http://{cfg.slurm.hub_api_address}:{cfg.hub.hub_port}"
    assert c.JupyterHub.hub_bind_url == c.JupyterHub.hub_connect_url == api
    assert c.SlurmBackend.slurm_conf == "/etc/slurm/slurm.conf"
    assert c.SlurmBackend.poll_period == float(cfg.slurm.poll_interval)


def test_cluster_examples_show_every_slurm_key() -> None:
    """Between them, the two examples set every key of the `slurm:` section."""
    from config.schema import SlurmSection

    shown: set[str] = set()
    for name in CLUSTER_EXAMPLES:
        shown |= set(yaml.safe_load((EXAMPLES / name).read_text())["slurm"])
    assert shown == set(SlurmSection.model_fields)


def test_cluster_examples_are_package_data() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["config"]
    for name in CLUSTER_EXAMPLES:
        assert any((EXAMPLES / name).relative_to(REPO / "config").match(p) for p in patterns)


# --- broken files through the CLI --------------------------------------------------------------


def test_every_bad_config_file_has_an_expectation() -> None:
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=needs_no_nvml) if name in NEEDS_NO_NVML else name
        for name in sorted(EXPECTED)
    ],
)
def test_bad_config_is_refused_with_a_message_naming_the_key(name: str) -> None:
    path = BAD / name
    result = check(path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert f"{path} is not a valid MLRP configuration:" in result.stderr
    for expected in EXPECTED[name]:
        assert expected in result.stderr, result.stderr


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    result = check(path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path} is not a valid MLRP configuration:\n  - file not found" in result.stderr


def test_directory_instead_of_file_is_refused(tmp_path: Path) -> None:
    result = check(tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot read" in result.stderr


def test_empty_file_asks_for_profiles(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    result = check(path)
    assert result.returncode == 2
    assert "profiles: required key is missing" in result.stderr


def test_python_object_tags_are_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"hub: !!python/object/apply:os.system ['touch {marker}']\nprofiles: []\n")
    result = check(path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "line 1, column 6" in result.stderr
    assert not marker.exists()


# --- the same mistakes through parse() ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([1, 2], "(top level): must be a mapping of sections (hub, profiles…)"),
        ("profiles", "(top level): must be a mapping"),
        ({"profiles": [cpu()], "hubb": {}}, "hubb: unknown key"),
        ({"profiles": [cpu(gpu=1)]}, "profiles[0].gpu: unknown key"),
        ({"profiles": [cpu(gpus={"choices": [1], "dflt": 1})]}, "profiles[0].gpus.dflt: unknown"),
        ({"profiles": [cpu()], "hub": {"port": "eighty"}}, "hub.port: Input should be a valid int"),
        ({"profiles": [cpu()], "hub": {"port": 0}}, "hub.port: Input should be greater than or"),
        ({"profiles": [cpu()], "hub": {"port": 65536}}, "hub.port: Input should be less than or"),
        ({"profiles": [cpu()], "hub": "x"}, "hub: Input should be a valid dictionary"),
        ({"profiles": [cpu(gpus=-1)]}, f"profiles[0].gpus: {GPUS_RULE}; got -1"),
        ({"profiles": [cpu(gpus=1000)]}, f"profiles[0].gpus: {GPUS_RULE}; got 1000"),
        ({"profiles": [cpu(gpus="one")]}, f"profiles[0].gpus: {GPUS_RULE}; got 'one'"),
        ({"profiles": [cpu(gpus=True)]}, f"profiles[0].gpus: {GPUS_RULE}; got True"),
        ({"profiles": [cpu(gpus=1.5)]}, f"profiles[0].gpus: {GPUS_RULE}; got 1.5"),
        ({"profiles": [cpu(gpus=None)]}, f"profiles[0].gpus: {GPUS_RULE}; got None"),
        (
            {"profiles": [cpu(gpus={"choices": [1, 2], "default": 3})]},
            "profiles[0].gpus: default 3 is not one of choices [1, 2]",
        ),
        (
            {"profiles": [cpu(gpus={"choices": [1, -2]})]},
            "profiles[0].gpus.choices[1]: Input should be greater than or equal to 0",
        ),
        (
            {"profiles": [cpu(gpus={"choices": []})]},
            "profiles[0].gpus.choices: List should have at least 1 item",
        ),
        ({"profiles": [cpu(image="pytorch")]}, "profiles[0] (cpu).image: no image 'pytorch'"),
        ({"profiles": [cpu(groups=["staff"])]}, "profiles[0] (cpu).groups: no group 'staff'"),
        (
            {"profiles": [cpu(), cpu(name="again")]},
            "profiles[1] (cpu).slug: 'cpu' is used by two profiles",
        ),
        ({"profiles": [cpu(slug="a; rm -rf /")]}, "profiles[0].slug: 'a; rm -rf /' is not allowed"),
        ({"profiles": [cpu(slug="{{7*7}}")]}, "profiles[0].slug: '{{7*7}}' is not allowed here"),
        ({"profiles": [cpu(slug="$(id)")]}, "profiles[0].slug: '$(id)' is not allowed here"),
        ({"profiles": [cpu(slug="cpu\n")]}, "profiles[0].slug: 'cpu\\n' is not allowed here"),
        ({"profiles": [cpu(slug="CPU")]}, "profiles[0].slug: 'CPU' is not allowed here"),
        ({"profiles": [cpu(slug="x" * 41)]}, "profiles[0].slug:"),
        ({"profiles": [cpu(name="")]}, "profiles[0].name: String should have at least 1"),
        ({"profiles": [cpu(memory="lots")]}, "profiles[0].memory: memory must be a size such as"),
        ({"profiles": [cpu(memory="0G")]}, "profiles[0].memory: memory must be positive"),
        ({"profiles": [cpu(memory=-5)]}, "profiles[0].memory: memory must be positive"),
        ({"profiles": [cpu(cpus=0)]}, "profiles[0].cpus: Input should be greater than 0"),
        ({"profiles": [cpu(idle_timeout=5)]}, "profiles[0].idle_timeout: Input should be greater"),
        (
            {"profiles": [cpu(backend="kubernetes")]},
            "profiles[0].backend: there is no placement backend 'kubernetes'; installed: ",
        ),
        ({"profiles": []}, "profiles: List should have at least 1 item"),
        ({}, "profiles: required key is missing"),
        (None, "profiles: required key is missing"),
        ({"profiles": {"slug": "cpu"}}, "profiles: Input should be a valid list"),
        ({"profiles": ["cpu"]}, "profiles[0]: Input should be a valid dictionary"),
        ({"profiles": [cpu()], "accounts": {"prefix": "Root_"}}, "accounts.prefix: 'Root_' is not"),
        ({"profiles": [cpu()], "accounts": {"prefix": "mlrp"}}, "accounts.prefix: 'mlrp' is not"),
        (
            {"profiles": [cpu()], "accounts": {"prefix": "a/../"}},
            "accounts.prefix: 'a/../' is not",
        ),
        (
            {"profiles": [cpu()], "gpus": {"source": "config", "devices": [0, 1, 1]}},
            "gpus.devices: each GPU may be listed only once",
        ),
        (
            {"profiles": [cpu()], "gpus": {"source": "config", "devices": [0, "0"]}},
            "gpus.devices: each GPU may be listed only once",
        ),
        (
            {"profiles": [cpu()], "gpus": {"devices": ["0,1"]}},
            "gpus.devices[0]: '0,1' is not allowed here",
        ),
        ({"profiles": [cpu()], "gpus": {"source": "cuda"}}, "gpus.source: Input should be 'auto',"),
        ({"profiles": [cpu()], "login": {"kind": "oauth"}}, "login.kind: Input should be 'native'"),
        (
            {"profiles": [cpu()], "login": {"admin_users": ["Bad Name"]}},
            "login.admin_users[0]: 'Bad Name' is not allowed here",
        ),
        (
            {"profiles": [cpu()], "login": {"min_password_length": 4}},
            "login.min_password_length: Input should be greater than or equal to 8",
        ),
        ({"profiles": [cpu()], "images": {"Py Torch": {}}}, "'Py Torch' is not allowed here"),
        ({"profiles": [cpu()], "groups": {"a b": []}}, "'a b' is not allowed here"),
    ],
)
def test_parse_names_the_key_and_the_rule(data: Any, expected: str) -> None:
    problems = problems_of(data)
    assert any(expected in p for p in problems), problems


def test_config_error_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        parse(
            {"hub": {"port": "eighty"}, "profiles": [cpu(gpus=-1), cpu(slug="x y")]},
            "site.yaml",
        )
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert [p.split(":")[0] for p in problems] == [
        "hub.port",
        "profiles[0].gpus",
        "profiles[1].slug",
    ]
    text = str(info.value)
    assert text.startswith("site.yaml is not a valid MLRP configuration:\n  - hub.port: ")
    assert text.count("\n  - ") == 3


def test_valid_config_round_trips_types() -> None:
    cfg = parse(
        {
            "gpus": {"source": "config", "devices": [0, "GPU-abc"]},
            "groups": {"staff": ["admin"]},
            "profiles": [
                cpu(memory="1.5G", cpus=2),
                {"slug": "gpu", "name": "GPU", "gpus": {"choices": [1, 2]}, "groups": ["staff"]},
            ],
        }
    )
    assert isinstance(cfg, MLRPConfig)
    assert cfg.gpus.devices == ["0", "GPU-abc"]
    assert cfg.profiles[0].memory_bytes == int(1.5 * 1024**3)
    assert cfg.profiles[1].gpu_choices == [1, 2]


def test_inventory_check_says_how_many_gpus_the_node_has() -> None:
    cfg = parse(
        {
            "gpus": {"source": "config", "devices": [0, 1]},
            "profiles": [cpu(), {"slug": "big", "name": "Big", "gpus": {"choices": [1, 4]}}],
        }
    )
    with pytest.raises(ConfigError) as info:
        node_inventory(cfg, "site.yaml")
    assert info.value.problems == [
        "profiles[1] (big).gpus: asks for up to 4 GPU(s) but this node has 2 (from "
        "gpus.devices); lower it to 2 or fewer, or list devices under gpus.devices"
    ]


def test_inventory_from_config_devices() -> None:
    cfg = parse(
        {
            "gpus": {"source": "config", "devices": [0, 1]},
            "profiles": [cpu(), {"slug": "two", "name": "Two", "gpus": 2}],
        }
    )
    inv = node_inventory(cfg)
    assert (inv.source, inv.ids) == ("config", ["0", "1"])


@needs_no_nvml
def test_nvml_source_without_nvml_is_a_config_error() -> None:
    cfg = parse({"gpus": {"source": "nvml"}, "profiles": [cpu()]})
    with pytest.raises(ConfigError) as info:
        node_inventory(cfg, "site.yaml")
    (problem,) = info.value.problems
    assert problem.startswith("gpus.source: ")
    assert "NVML is not available on this node" in problem
    assert "gpus.devices" in problem  # says what to do instead


@needs_no_nvml
def test_auto_source_without_nvml_and_gpu_profile_is_refused() -> None:
    cfg = parse({"profiles": [cpu(), {"slug": "g", "name": "G", "gpus": 1}]})
    with pytest.raises(ConfigError) as info:
        node_inventory(cfg)
    assert "this node has 0" in info.value.problems[0]


# --- product bugs (see the report) -------------------------------------------------------------


def test_every_problem_line_names_its_key_path() -> None:
    problems = problems_of({"profiles": [cpu(image="pytorch"), cpu(slug="b", image="pytorch")]})
    assert all(re.match(r"^profiles\[\d+\]", p) for p in problems), problems
    assert len(problems) == 2, problems


def test_memory_true_is_refused() -> None:
    problems = problems_of({"profiles": [cpu(memory=True)]})
    assert any(p.startswith("profiles[0].memory:") for p in problems), problems


# --- every problem in one run (config.collect) -------------------------------------------------


def test_five_mistakes_are_all_reported_in_one_run() -> None:
    path = BAD / "five_mistakes.yaml"
    result = check(path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    listed = [line.removeprefix("  - ") for line in result.stderr.splitlines()[1:-1]]
    assert listed == FIVE_MISTAKES, result.stderr
    assert result.stderr.splitlines()[-1] == "Every key, with a comment: `mlrp config example`."


def test_a_sections_own_check_runs_although_another_key_of_it_is_wrong() -> None:
    problems = problems_of({"hub": {"ip": "0.0.0.0", "port": "eighty"}, "profiles": [cpu()]})
    assert problems[0].startswith("hub.port: Input should be a valid integer")
    assert problems[1].startswith("hub: ip: listening on 0.0.0.0 over plain HTTP")
    assert len(problems) == 2, problems


def test_a_broken_tls_section_is_not_also_called_plain_http(tmp_path: Path) -> None:
    """The clear-text check rests on hub.tls: with tls wrong, it must not run on a stand-in."""
    problems = problems_of(
        {"hub": {"ip": "0.0.0.0", "tls": {"cert": str(tmp_path / "no.pem")}}, "profiles": [cpu()]}
    )
    assert problems == ["hub.tls: give both cert and key (PEM files), or neither"]


def test_cross_references_run_beside_field_errors() -> None:
    problems = problems_of(
        {
            "groups": {"staff": []},
            "images": {"default": {}, "torch": {"env": ["not", "a", "path"]}},
            "profiles": [
                {"nmae": "CPU", "slg": "cpu", "groups": ["staf"]},  # no slug: named by index
                "gpu",  # not a profile at all
                cpu(slug="b", image="torch"),  # its image is broken, but it is defined
                cpu(slug="c", image="trch", gpus={"choices": [1, 2], "default": 4}),
                cpu(slug="c", cpus=True),
            ],
        }
    )
    assert "profiles[0].slug: required key is missing" in problems
    assert "profiles[0].nmae: unknown key; did you mean 'name'?" in problems
    assert "profiles[0].slg: unknown key; did you mean 'slug'?" in problems
    assert (
        "profiles[1]: Input should be a valid dictionary or instance of ProfileSection" in problems
    )
    assert "profiles[3].gpus: default 4 is not one of choices [1, 2]" in problems
    assert "profiles[4].cpus: true/false is not allowed here; got True" in problems
    assert problems[-3:] == [
        "profiles[0].groups: no group 'staf'; groups defined: staff; did you mean 'staff'?",
        "profiles[3] (c).image: no image 'trch'; images defined: default, torch; did you mean "
        "'torch'?",
        "profiles[4] (c).slug: 'c' is used by two profiles",
    ]
    assert not any("no-slug" in p or "profiles[1] (" in p for p in problems), problems
    assert not any(p.startswith("profiles[2]") for p in problems), problems


def test_misspelt_words_get_the_nearest_allowed_one() -> None:
    problems = problems_of(
        {"hub": {"log_level": "info"}, "gpus": {"source": "nvm"}, "profiles": [cpu()]}
    )
    assert problems == [
        "hub.log_level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'; did you mean "
        "'INFO'?",
        "gpus.source: Input should be 'auto', 'nvml' or 'config'; did you mean 'nvml'?",
    ]


def test_an_unknown_key_far_from_any_lists_the_allowed_ones() -> None:
    (problem,) = problems_of({"profiles": [cpu()], "idle_culler": {"xyzzy": 1}})
    assert (
        problem
        == "idle_culler.xyzzy: unknown key; the keys allowed here are enabled, timeout, interval"
    )


def test_node_checks_run_beside_schema_problems(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "hub": {"port": "eighty"},
                "gpus": {"source": "config", "devices": [0, 1]},
                "profiles": [cpu(), {"slug": "four", "name": "Four", "gpus": 4}],
            }
        )
    )
    found = examine(path, Node(cpus=64, memory=2**40))
    assert found.problems[0].startswith("hub.port:")
    assert found.problems[1].startswith("profiles[1] (four).gpus: asks for up to 4 GPU(s)")
    assert found.config is None


def test_a_broken_gpus_section_is_not_judged_against_the_node(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "gpus": {"source": "config", "devices": ["0,1"]},
                "profiles": [cpu(), {"slug": "two", "name": "Two", "gpus": 2}],
            }
        )
    )
    found = examine(path, Node(cpus=64, memory=2**40))
    assert found.problems == [
        "gpus.devices[0]: '0,1' is not allowed here (must match ^[A-Za-z0-9-]{1,64}$)"
    ]


# --- limits beyond this node: warnings, not errors ---------------------------------------------


def test_limits_beyond_the_node_are_warnings_naming_what_the_node_has() -> None:
    cfg = parse({"profiles": [cpu(cpus=2, memory="4G"), cpu(slug="big", cpus=64, memory="900G")]})
    assert beyond_node(cfg, Node(cpus=2, memory=int(23.5 * 2**30))) == [
        "profiles[1] (big).cpus: 64 is more than this node's 2 CPU(s); a server would never get "
        "them",
        "profiles[1] (big).memory: 900G (900.0 GiB) is more than this node's 23.5 GiB of memory; "
        "a server would never get it",
    ]
    assert beyond_node(cfg, Node(cpus=64, memory=2**40)) == []
    assert beyond_node(cfg, Node(cpus=None, memory=None)) == []


def test_a_limit_the_node_just_has_is_no_warning() -> None:
    cfg = parse(
        {"profiles": [cpu(cpus=4, memory="8G"), cpu(slug="more", cpus=4.5, memory=8 * 2**30 + 1)]}
    )
    warnings = beyond_node(cfg, Node(cpus=4, memory=8 * 2**30))
    assert [w.split(":")[0] for w in warnings] == [
        "profiles[1] (more).cpus",
        "profiles[1] (more).memory",
    ]


def test_check_warns_but_passes_beyond_the_node(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    # More than any machine these tests run on: 512 CPUs (the most a profile may ask) and 1 PiB.
    path.write_text(yaml.safe_dump({"profiles": [cpu(cpus=512, memory="1048576G")]}))
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert f"{path}: valid. 1 profile(s): cpu" in result.stdout
    assert "warning: on this node, 2 limit(s) cannot be given:" in result.stderr
    assert "  - profiles[0] (cpu).cpus: 512 is more than this node's " in result.stderr
    assert "  - profiles[0] (cpu).memory: 1048576G (1048576.0 GiB) is more than" in result.stderr


def test_check_lists_warnings_beside_problems(tmp_path: Path) -> None:
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump({"hub": {"port": 0}, "profiles": [cpu(cpus=512)]}))
    result = check(path)
    assert result.returncode == 2
    assert "hub.port: Input should be greater than or equal to 1" in result.stderr
    assert "profiles[0] (cpu).cpus: 512 is more than this node's" in result.stderr


def test_node_memory_reads_memtotal(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684096 kB\nMemFree:        23579992 kB\n")
    assert node_memory(meminfo) == 24684096 * 1024
    meminfo.write_text("garbage\n")
    assert node_memory(meminfo) is None
    assert node_memory(tmp_path / "absent") is None


# --- the example, wherever mlrp is installed ---------------------------------------------------


def test_config_example_prints_a_valid_file(tmp_path: Path) -> None:
    result = run_mlrp("config", "example", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXAMPLE.read_text()
    copy = tmp_path / "mlrp.yaml"
    copy.write_text(result.stdout)
    assert load(copy).profiles[0].slug == "cpu"
    assert check(copy).returncode == 0


def test_the_example_is_package_data() -> None:
    """pyproject.toml ships it in the wheel beside config/*.py (what `bootstrap.sh install`
    installs); `mlrp config example` reads it from the package, not from a clone."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["config"]
    assert any(EXAMPLE.relative_to(REPO / "config").match(p) for p in patterns), patterns
    assert example_text() == EXAMPLE.read_text()


# --- hub.announcement --------------------------------------------------------------------------

ANNOUNCEMENT_FILES = {
    "announcement_not_text.yaml": [
        'hub.announcement: must be text, in quotes if in doubt, such as "Maintenance Saturday '
        '9-12"; got 2024-06-01'
    ],
    "announcement_too_long.yaml": [
        "hub.announcement: is 539 characters long; keep it to 500 or fewer"
    ],
    "announcement_two_lines.yaml": [
        "hub.announcement: must be one line of plain text, without line breaks or tabs"
    ],
}
EXPECTED.update(ANNOUNCEMENT_FILES)  # test_every_bad_config_file_has_an_expectation reads it


@pytest.mark.parametrize("name", sorted(ANNOUNCEMENT_FILES))
def test_bad_announcement_is_refused_by_config_check(name: str) -> None:
    test_bad_config_is_refused_with_a_message_naming_the_key(name)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, "hub.announcement: must be text"),
        (["Maintenance"], "hub.announcement: must be text"),
        (True, "hub.announcement: "),
        ("x" * 501, "hub.announcement: is 501 characters long"),
        ("Maintenance\tSaturday", "hub.announcement: must be one line"),
    ],
)
def test_bad_announcement_values(value: Any, expected: str) -> None:
    problems = problems_of({"hub": {"announcement": value}, "profiles": [cpu()]})
    assert any(p.startswith(expected) for p in problems), problems


def test_announcement_is_trimmed_and_optional() -> None:
    assert parse({"profiles": [cpu()]}).hub.announcement == ""
    assert parse({"hub": {"announcement": None}, "profiles": [cpu()]}).hub.announcement == ""
    text = "x" * 500
    assert parse({"hub": {"announcement": f" {text}\n"}, "profiles": [cpu()]}).hub.announcement == (
        text
    )


def test_announcement_reaches_jupyterhub_escaped() -> None:
    """JupyterHub's page.html inserts `announcement` with `| safe`: ours arrives escaped."""
    from traitlets.config import Config

    from config.render import configure

    hostile = 'Maintenance <script>alert("x")</script> & more'
    c = Config()
    configure(c, parse({"hub": {"announcement": hostile}, "profiles": [cpu()]}), records=None)
    assert c.JupyterHub.template_vars == {
        "announcement": "Maintenance &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; more"
    }
    quiet = Config()
    configure(quiet, parse({"profiles": [cpu()]}), records=None)
    assert "template_vars" not in quiet.JupyterHub


def test_every_setting_the_yaml_renders_is_a_real_trait() -> None:
    """The YAML → traitlets mapping cannot drift from the classes it configures: a renamed or
    moved trait (a backend setting moved off MLRPSpawner) would otherwise be ignored silently
    by traitlets."""
    from jupyterhub.app import JupyterHub
    from jupyterhub.auth import Authenticator
    from jupyterhub.proxy import ConfigurableHTTPProxy
    from traitlets.config import Config

    from config.render import configure
    from hub.auth import NativeAuthenticator
    from spawners.backends.local import LocalBackend
    from spawners.backends.slurm import SlurmBackend
    from spawners.spawner import MLRPSpawner

    classes = {
        cls.__name__: cls
        for cls in (
            JupyterHub,
            Authenticator,
            ConfigurableHTTPProxy,
            NativeAuthenticator,
            MLRPSpawner,
            LocalBackend,
            SlurmBackend,
        )
    }
    c = Config()
    tls = {"self_signed": True}
    slurm = {"conf": "/etc/slurm/slurm.conf", "hub_api_address": "10.0.0.1"}
    cfg = {"hub": {"tls": tls, "announcement": "x"}, "profiles": [cpu()], "slurm": slurm}
    configure(c, parse(cfg), None)
    assert "SlurmBackend" in c and c.JupyterHub.hub_connect_url == "http://10.0.0.1:8081"
    for section, values in c.items():
        assert section in classes, f"c.{section} configures a class we do not know"
        traits = classes[section].class_trait_names(config=True)
        for key in values:
            assert key in traits, f"c.{section}.{key} is not a config trait of {section}"
