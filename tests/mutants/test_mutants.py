"""Each guarantee, broken on purpose: the tests that prove it must then fail.

A mutant is one small edit to a copy of the code (hub/, spawners/, config/, tests/), such as
"stop() no longer releases the GPU lease". For each, the tests named beside it run against the
mutated copy and must fail; a mutant they survive means those tests no longer prove what they
claim. The unmutated copy must pass the same tests first, so a broken test cannot "kill"
anything. An edit whose text is no longer in the code fails loudly: when the code changes,
this table changes with it.

Only unit-level tests are used here (seconds per mutant). Guarantees proven by end-to-end tests
(live progress, the install surviving a deleted clone) were checked by hand; see the README.
Run: pytest tests/mutants -q (about a minute).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import REPO

pytestmark = pytest.mark.mutants

COPIED = ("hub", "spawners", "config", "images", "tests", "pyproject.toml")


@dataclass(frozen=True)
class Mutant:
    id: str
    guarantee: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


LIFECYCLE = "tests/unit/test_lifecycle.py"
LOCAL = "tests/unit/test_local_backend.py"
RECONCILE = "tests/unit/test_reconcile.py"
MAPPING = "tests/unit/test_account_mapping.py"
SLURM = "tests/unit/test_slurm_backend.py"
IMAGES = "tests/unit/test_images_compat.py"
SPAWNER = "tests/unit/test_spawner.py"
MUTANTS = [
    Mutant(
        "failed-start-keeps-lease",
        "a failed start releases its GPU lease",
        "spawners/spawner.py",
        "        finally:\n            await self._teardown(placed)\n"
        "            placed.drop_port()",
        "        finally:\n            placed.drop_port()",
        (f"{LIFECYCLE}::test_a_failed_start_releases_its_lease_before_it_returns",),
    ),
    Mutant(
        "cancelled-start-keeps-lease",
        "a start cancelled by the hub releases its GPU lease",
        "spawners/spawner.py",
        "            self._background(self._cleanup_failed())\n            raise",
        "            raise",
        (f"{LIFECYCLE}::test_a_cancelled_start_releases_its_lease",),
    ),
    Mutant(
        "stop-keeps-lease",
        "stop() releases",
        "spawners/spawner.py",
        "            await placed.stop(now=now)\n        finally:\n"
        "            await self._teardown(placed)",
        "            await placed.stop(now=now)\n        finally:\n            pass",
        (f"{LIFECYCLE}::test_stop_releases",),
    ),
    Mutant(
        "dead-poll-keeps-lease",
        "poll() finding the server dead releases",
        "spawners/spawner.py",
        "        # Died on its own: end whatever it left and free its GPUs now, not at a later "
        "stop.\n        await self._teardown(placed)",
        "        pass",
        (
            f"{LIFECYCLE}::test_a_poll_that_finds_the_server_dead_releases",
            f"{LIFECYCLE}::test_after_a_hub_restart_the_reloaded_server_keeps_then_frees_its_lease",
        ),
    ),
    Mutant(
        "live-poll-drops-lease",
        "a poll of a running server keeps the lease",
        "spawners/spawner.py",
        "        if result.status is PollStatus.RUNNING:\n            return None",
        "        if result.status is PollStatus.RUNNING:\n"
        "            await self._teardown(placed)\n            return None",
        (f"{LIFECYCLE}::test_a_started_server_holds_its_lease_while_it_runs",),
    ),
    Mutant(
        "leftovers-free-the-gpu",
        "a stopped server's GPUs stay held while a process of it survives",
        "spawners/backends/local.py",
        "        left = await self._end_processes()",
        "        left = []",
        (f"{LOCAL}::test_gpus_stay_held_while_a_stopped_servers_process_survives",),
    ),
    Mutant(
        "sweep-frees-busy-holds",
        "held GPUs are freed only once the leftover processes are gone",
        "spawners/backends/local.py",
        "            if left:\n                continue",
        "            if False:\n                continue",
        (f"{LOCAL}::test_gpus_stay_held_while_a_stopped_servers_process_survives",),
    ),
    Mutant(
        "released-before-the-kill",
        "GPUs are released only after the server's group is empty",
        "spawners/backends/local.py",
        "        left = await self._end_processes()\n        b, log = self.backend, "
        "self.spawner.log",
        "        b, log = self.backend, self.spawner.log\n        b.allocator.release(self.owner)"
        "\n        left = await self._end_processes()",
        (f"{LOCAL}::test_a_stop_releases_gpus_only_after_the_group_is_empty",),
    ),
    Mutant(
        "freezer-kills-nothing",
        "a stop ends every process of the server, however detached (v1 freezer)",
        "spawners/cgroups.py",
        "                pids = self.pids()\n                _signal_all(pids)",
        "                pids = self.pids()",
        ("tests/unit/test_cgroups.py::test_real_kill_ends_every_detached_process",),
    ),
    Mutant(
        "no-process-limit",
        "a server's process count is limited (pids controller)",
        "spawners/cgroups.py",
        '    elif controller == "pids":\n        _write(group / "pids.max", _pids_max(limits))',
        '    elif controller == "pids":\n        pass',
        ("tests/unit/test_cgroups.py::test_real_process_limit_stops_a_fork_bomb",),
    ),
    Mutant(
        "shared-tmp",
        "a server's /tmp is its own",
        "spawners/isolation.py",
        '                check(mount(b"/proc/self/fd/%d" % fd, target, None, MS_BIND, None), '
        "target)",
        "                pass",
        ("tests/unit/test_isolation.py::test_a_server_sees_only_its_own_temp_dirs",),
    ),
    Mutant(
        "shm-unbounded",
        "a server's /dev/shm is no larger than its memory limit",
        "spawners/isolation.py",
        '            shm_options += f",size={self.shm_bytes}"',
        "            pass",
        (
            "tests/unit/test_isolation.py::test_dev_shm_is_private_and_no_larger_than_the_memory_limit",
        ),
    ),
    Mutant(
        "umask-ignored",
        "a server runs with the admin's umask (077 by default)",
        "spawners/backends/local.py",
        "            os.umask(mask)\n",
        "",
        (f"{LOCAL}::test_the_server_runs_with_the_admins_umask",),
    ),
    Mutant(
        "custody-ignores-account",
        "the hub never routes to a port held by another account",
        "spawners/custody.py",
        "    if uid is not None and owner != uid:",
        "    if False:",
        ("tests/unit/test_custody.py::test_a_listener_of_another_account_is_refused",),
    ),
    Mutant(
        "custody-lets-go",
        "after a server dies, nobody else can bind its port while the route may exist",
        "spawners/custody.py",
        "        return int(mine)",
        "        os.close(mine)\n        return -1",
        ("tests/unit/test_custody.py::test_the_hub_holds_the_port_after_the_server_dies",),
    ),
    Mutant(
        "unknown-names-cost-more",
        "an unknown login name costs the same single scrypt as a known one",
        "hub/accounts.py",
        "        verify_password(password, dummy_hash())",
        '        verify_password(password, hash_password("x"))',
        (
            "tests/unit/test_login_security.py::"
            "test_an_unknown_name_costs_exactly_what_a_known_one_does",
        ),
    ),
    Mutant(
        "old-hashes-kept",
        "a hash made with weaker parameters is upgraded at the next login",
        "hub/accounts.py",
        "    if needs_upgrade(stored):",
        "    if False:",
        ("tests/unit/test_login_security.py::test_an_old_hash_still_logs_in_and_is_upgraded_then",),
    ),
    Mutant(
        "reconcile-cleans-live-servers",
        "reconciliation leaves every server JupyterHub runs alone",
        "spawners/reconcile.py",
        "        if cp.owner in live:\n            continue",
        "        if False:\n            continue",
        (f"{RECONCILE}::test_a_checkpoint_nobody_runs_is_cleaned_and_live_ones_are_kept",),
    ),
    Mutant(
        "reconcile-frees-checkpointed",
        "what a kept (unreadable or uncleanable) checkpoint holds stays held",
        "spawners/reconcile.py",
        "    holders = live | {cp.owner for cp in left}",
        "    holders = live",
        (
            f"{RECONCILE}::test_an_unreadable_checkpoint_is_kept_with_its_gpus",
            f"{RECONCILE}::test_a_failing_clean_keeps_the_checkpoint_and_its_gpus",
        ),
    ),
    Mutant(
        "reconcile-ignores-pending",
        "a start under way counts as a live server",
        "hub/reconcile.py",
        "        if spawner is not None and spawner.pending:",
        "        if False:",
        (f"{RECONCILE}::test_a_pending_start_counts_as_live",),
    ),
    Mutant(
        "start-overwrites-stale-checkpoint",
        "a new start cleans its owner's stale checkpoint first",
        "spawners/spawner.py",
        "            await self._clean_stale_checkpoint()\n            request = self.validate()",
        "            request = self.validate()",
        (f"{RECONCILE}::test_a_new_start_cleans_a_stale_checkpoint_of_its_owner_first",),
    ),
    Mutant(
        "unknown-poll-stops-server",
        "a poll that cannot tell never stops a server or frees its GPUs",
        "spawners/spawner.py",
        "            self._poll_doubt = result.why\n            return None",
        "            self._poll_doubt = result.why",
        (f"{LIFECYCLE}::test_a_poll_that_cannot_tell_keeps_the_server_and_its_lease",),
    ),
    Mutant(
        "newer-state-dropped",
        "state this MLRP cannot read is kept, and its server not called gone",
        "spawners/spawner.py",
        "            return None if self.unreadable_state is not None else 0",
        "            return 0",
        (
            "tests/unit/test_spawner.py::test_state_of_a_newer_version_is_kept_and_never_called_gone",
        ),
    ),
    Mutant(
        "env-shows-all-gpus",
        "CUDA_VISIBLE_DEVICES holds exactly the leased GPUs",
        "spawners/backends/local.py",
        'visible = ",".join(self.leased)',
        'visible = ",".join(self.platform.allocator.ids[: max(1, len(self.leased))])',
        ("tests/unit/test_local_backend.py::test_the_server_sees_exactly_its_leased_gpus",),
    ),
    Mutant(
        "nvidia-env-all",
        "NVIDIA_VISIBLE_DEVICES holds exactly the leased GPUs",
        "spawners/backends/local.py",
        '"NVIDIA_VISIBLE_DEVICES": visible or "void"',
        '"NVIDIA_VISIBLE_DEVICES": "all"',
        (
            "tests/unit/test_local_backend.py::test_the_server_sees_exactly_its_leased_gpus",
            "tests/unit/test_local_backend.py::test_a_cpu_server_sees_no_gpu",
        ),
    ),
    Mutant(
        "hub-env-leaks",
        "the hub's PYTHONPATH never reaches a user server",
        "spawners/spawner.py",
        '    @default("default_url")',
        '    @default("env_keep")\n    def _env_keep(self) -> list[str]:\n'
        '        return ["PYTHONPATH", "VIRTUAL_ENV"]\n\n    @default("default_url")',
        (
            "tests/unit/test_local_backend.py::"
            "test_the_hubs_python_environment_never_reaches_a_server",
        ),
    ),
    Mutant(
        "home-left-open",
        "homes are created 0700 even where useradd makes them 0755",
        "spawners/accounts.py",
        "    os.chmod(account.home, 0o700)",
        "    pass",
        ("tests/unit/test_account_creation.py::test_home_is_private_even_where_useradd_opens_it",),
    ),
    Mutant(
        "account-not-claimed",
        "an account held by another hub user is never given to a second one",
        "spawners/accounts.py",
        "    records.claim_unix_account(hub_user, name)",
        "    pass",
        (
            "tests/unit/test_account_creation.py::"
            "test_an_account_held_by_another_hub_user_is_never_shared",
        ),
    ),
    Mutant(
        "existing-account-created",
        "accounts.mode existing never creates an account",
        "spawners/accounts.py",
        '    if policy.mode == "system":\n        return await ensure_account(',
        '    if policy.mode in ("system", "existing"):\n        return await ensure_account(',
        (
            f"{MAPPING}::test_a_person_without_an_account_gets_a_sentence_and_nothing_is_made",
            f"{MAPPING}::test_the_spawn_is_refused_with_the_persons_sentence",
        ),
    ),
    Mutant(
        "existing-system-account",
        "a hub user never runs as root or a system account in existing mode",
        "spawners/accounts.py",
        "    if account.uid < UID_MIN or account.uid == NOBODY_UID:",
        "    if False:",
        (f"{MAPPING}::test_root_and_system_accounts_are_refused",),
    ),
    Mutant(
        "existing-runs-as-hub",
        "in existing mode servers run as people's own accounts, not the hub's",
        "spawners/platform.py",
        'return self.accounts_mode != "single-user"',
        'return self.accounts_mode == "system"',
        (f"{MAPPING}::test_the_spawn_is_refused_with_the_persons_sentence",),
    ),
    Mutant(
        "existing-account-shared",
        "two hub users never share an existing account",
        "spawners/accounts.py",
        "    records.claim_unix_account(hub_user, account.name)",
        "    pass",
        (f"{MAPPING}::test_two_hub_users_never_share_an_account",),
    ),
    Mutant(
        "account-check-only-in-code",
        "the database refuses a second hub user on one account, even in a race",
        "hub/migrations/versions/0001_initial.py",
        'sa.Column("unix_name", sa.String(32), nullable=False, unique=True)',
        'sa.Column("unix_name", sa.String(32), nullable=False)',
        (
            "tests/unit/test_exclusivity.py::"
            "test_a_unix_account_is_never_claimed_by_two_hub_users_racing",
        ),
    ),
    Mutant(
        "lease-without-constraint",
        "no device is ever leased twice, even when two processes race",
        "hub/migrations/versions/0001_initial.py",
        '        sa.UniqueConstraint("node", "device", name="uq_gpu_lease_device"),\n',
        "",
        (
            "tests/unit/test_exclusivity.py::"
            "test_a_device_is_never_leased_twice_when_two_processes_race",
        ),
    ),
    Mutant(
        "api-unwraps-lists",
        "an API body with a list where a string belongs is refused",
        "spawners/profiles.py",
        '    slug = options.get("profile", visible[0].slug if len(visible) == 1 else "")\n',
        '    slug = options.get("profile", visible[0].slug if len(visible) == 1 else "")\n'
        "    slug = slug[0] if isinstance(slug, list) and len(slug) == 1 else slug\n",
        ("tests/unit/test_profiles.py::test_api_profile_must_be_a_string",),
    ),
    Mutant(
        "server-name-in-paths",
        "a server's name never becomes a path or cgroup name unchecked",
        "spawners/accounts.py",
        '        return f"{account}.{server_name}"\n'
        '    return f"{account}._{_hashed(server_name)}"',
        '        return f"{account}.{server_name}"\n    return f"{account}-{server_name}"',
        (
            "tests/unit/test_local_backend.py::"
            "test_every_server_name_gets_its_own_safe_log_and_starts",
        ),
    ),
    Mutant(
        "fence-denies-nothing",
        "a server is denied the device nodes of GPUs leased to others (NVML minors)",
        "spawners/backends/local.py",
        "if g.id not in self.leased]",
        "if g.id not in self.leased and g.minor == -1]",
        (f"{LOCAL}::test_nvml_gpus_of_others_are_fenced_and_only_the_lease_is_visible",),
    ),
    Mutant(
        "fence-denies-own-gpu",
        "a server may open the GPUs it leases",
        "spawners/backends/local.py",
        "if g.id not in self.leased]",
        "]",
        (f"{LOCAL}::test_nvml_gpus_of_others_are_fenced_and_only_the_lease_is_visible",),
    ),
    Mutant(
        "v2-memory-unlimited",
        "memory limits are written on cgroup v2",
        "spawners/cgroups.py",
        'memory = "max" if limits.memory_bytes is None else str(limits.memory_bytes)',
        'memory = "max"',
        (f"{LOCAL}::test_limits_hold_the_server_and_go_with_it",),
    ),
    Mutant(
        "v2-cpu-unlimited",
        "CPU limits are written on cgroup v2",
        "spawners/cgroups.py",
        'quota = "max" if limits.cpus is None else str(_quota_us(limits.cpus))',
        'quota = "max"',
        (f"{LOCAL}::test_limits_hold_the_server_and_go_with_it",),
    ),
    Mutant(
        "cgroup-outlives-server",
        "a server's cgroups are removed when it stops",
        "spawners/backends/local.py",
        "            self.cgroup.remove()",
        "            pass",
        (f"{LOCAL}::test_limits_hold_the_server_and_go_with_it",),
    ),
    Mutant(
        "server-not-in-its-cgroup",
        "the server joins its cgroup before it runs a line of its own",
        "spawners/backends/local.py",
        "                step()  # as root, before dropping privileges",
        "                pass",
        (f"{LOCAL}::test_limits_hold_the_server_and_go_with_it",),
    ),
    Mutant(
        "nvml-minor-from-index",
        "device rules use NVML's minor numbers, not NVML's indexes",
        "spawners/gpus.py",
        "minor=g.minor) for g in report.gpus",
        "minor=g.index) for g in report.gpus",
        ("tests/unit/test_gpus.py::test_nvml_inventory_uses_uuids_and_minors_from_nvml",),
    ),
    Mutant(
        "failing-minor-drops-gpu",
        "a GPU whose minor-number call fails stays in the inventory",
        "spawners/gpus.py",
        "    except pynvml.NVMLError as e:\n        return None, _reason(e)",
        "    except ZeroDivisionError as e:\n        return None, _reason(e)",
        ("tests/unit/test_gpus.py::test_failing_minor_call_keeps_the_gpu_but_does_not_fence_it",),
    ),
    Mutant(
        "failing-minor-guessed",
        "a GPU without a known minor number fences no device (not its index's)",
        "spawners/gpus.py",
        "        minor=minor,\n        minor_error=minor_error,",
        "        minor=index if minor is None else minor,\n        minor_error=minor_error,",
        ("tests/unit/test_gpus.py::test_failing_minor_call_keeps_the_gpu_but_does_not_fence_it",),
    ),
    Mutant(
        "nvml-not-shut-down-on-error",
        "NVML is shut down also when a call fails mid-read",
        "spawners/gpus.py",
        "        return NvmlReport(error=_reason(e))\n    finally:\n        _shutdown(pynvml)",
        "        return NvmlReport(error=_reason(e))\n    finally:\n        pass",
        ("tests/unit/test_gpus.py::test_nvml_is_shut_down_when_a_call_fails_mid_read",),
    ),
    Mutant(
        "doctor-own-cgroup-verdict",
        "mlrp doctor's cgroup row says what the spawner's probe() and create() do",
        "hub/doctor.py",
        "    if support.enforced:\n        return Check(name, True, support.detail, False)",
        "    if support.enforced or support.detail.startswith('cgroups not writable'):\n"
        "        return Check(name, True, support.detail, False)",
        ("tests/unit/test_doctor.py::test_cgroup_row_agrees_with_the_spawner",),
    ),
    Mutant(
        "fence-ignores-devices-writability",
        "mlrp doctor's GPU fence row says OK only where create() writes devices.deny",
        "spawners/cgroups.py",
        "    if not _devices_usable(root, layout.kind):\n        return FenceSupport(",
        "    if not (root / 'devices' / 'devices.deny').is_file():\n        return FenceSupport(",
        ("tests/unit/test_doctor.py::test_fence_row_agrees_with_the_spawner",),
    ),
    Mutant(
        "doctor-ignores-gpus-devices",
        "mlrp doctor --config judges the config's gpus.devices as the hub would",
        "hub/cli.py",
        "        gpu_devices=list(cfg.gpus.devices),",
        "        gpu_devices=[],",
        ("tests/unit/test_doctor.py::test_cli_doctor_judges_the_configs_gpu_devices",),
    ),
    Mutant(
        "retired-name-reused",
        "a removed person's Unix account is never given to a later person of the same name",
        "spawners/accounts.py",
        "        if name == recorded or not records.unix_name_retired(name):",
        "        if True:",
        (
            "tests/unit/test_storage.py::"
            "test_a_retired_account_is_never_given_to_the_next_person_of_that_name",
        ),
    ),
    Mutant(
        "retired-name-claimable",
        "nobody can claim a retired Unix account; only a restore gives it back",
        "hub/storage.py",
        "            if retired is not None:\n                raise AccountClash(",
        "            if False:\n                raise AccountClash(",
        (
            "tests/unit/test_storage.py::"
            "test_a_retired_account_is_never_given_to_the_next_person_of_that_name",
        ),
    ),
    Mutant(
        "bad-people-created",
        "one bad line of an import creates nobody: every problem is reported first",
        "hub/people.py",
        '    if problems:\n        raise PeopleError("\\n".join(problems))\n\n\n# -- add',
        '    if False:\n        raise PeopleError("\\n".join(problems))\n\n\n# -- add',
        (
            "tests/unit/test_people_input.py::"
            "test_every_problem_is_reported_and_groups_need_the_hub",
        ),
    ),
    Mutant(
        "cpus-not-spread",
        "1-CPU servers are spread over the node's CPUs, least used first",
        "spawners/affinity.py",
        "key=lambda cpu: (used[cpu], cpu)",
        "key=lambda cpu: cpu",
        (f"{LOCAL}::test_placer_spreads_one_cpu_servers_over_the_node_least_used_first",),
    ),
    Mutant(
        "announcement-unescaped",
        "the announcement is shown as text, never as HTML",
        "config/render.py",
        '    return {"announcement": str(escape(text))}',
        '    return {"announcement": text}',
        ("tests/unit/test_config.py::test_announcement_reaches_jupyterhub_escaped",),
    ),
    Mutant(
        "config-check-stops-early",
        "config check reports every problem of a file in one run",
        "config/collect.py",
        "        found.problems += new\n",
        "        found.problems += new\n        return found\n",
        ("tests/unit/test_config.py::test_five_mistakes_are_all_reported_in_one_run",),
    ),
    Mutant(
        "no-did-you-mean",
        "a misspelt key gets the nearest known key",
        "config/suggest.py",
        '    return f"; did you mean {found!r}?" if found else ""',
        '    return ""',
        ("tests/unit/test_config.py::test_five_mistakes_are_all_reported_in_one_run",),
    ),
    # Slurm: the end-to-end guarantees (stop cancels the job, impossible requests never reach
    # sbatch, a frozen controller ends nothing, a hub killed after sbatch leaves no job, an
    # outside scancel is noticed, an unreachable node is explained) were broken by hand against
    # tests/integration/test_slurm_spawn.py; see the README. These run here on every pass.
    Mutant(
        "slurm-unknown-is-gone",
        "a squeue that fails never ends a Slurm session",
        "spawners/backends/slurm.py",
        "                result[job_id] = Poll.unknown(obs.detail)",
        "                result[job_id] = Poll.gone(0, obs.detail)",
        (f"{SLURM}::test_a_controller_that_does_not_answer_ends_nothing",),
    ),
    Mutant(
        "slurm-choices-unbounded",
        "a person's walltime, CPUs and memory stay within what the partition allows",
        "spawners/backends/slurm.py",
        "            if isinstance(value, bool) or not isinstance(value, int) "
        "or not low <= value <= high:",
        "            if isinstance(value, bool) or not isinstance(value, int):",
        (f"{SLURM}::test_choices_beyond_the_partition_are_refused",),
    ),
    Mutant(
        "slurm-partition-unchecked",
        "a person picks only among the profile's partitions",
        "spawners/backends/slurm.py",
        "            if not isinstance(value, str) or value not in names:",
        "            if not isinstance(value, str):",
        (f"{SLURM}::test_choices_beyond_the_partition_are_refused",),
    ),
    Mutant(
        "slurm-output-dir-not-theirs",
        "a session's output directory is the person's own",
        "spawners/backends/slurm.py",
        "                    os.chown(part, account.uid, account.gid)",
        "                    pass",
        (f"{SLURM}::test_the_output_directory_is_made_for_the_person",),
    ),
    # Curated images (images/compat.py, the spawner's check before every start).
    Mutant(
        "image-driver-unchecked",
        "an image whose CUDA needs a newer NVIDIA driver than the node's is refused",
        "images/compat.py",
        "    if driver_key(node.driver) < driver_key(needed):",
        "    if False:",
        (f"{IMAGES}::test_driver_by_image",),
    ),
    Mutant(
        "image-check-skipped",
        "the image check runs before every spawn, from the form and from the API",
        "spawners/spawner.py",
        "        if refusal is not None:\n            raise PlacementError(",
        "        if False:\n            raise PlacementError(",
        (f"{SPAWNER}::test_an_image_the_nodes_driver_cannot_run_is_refused_before_start",),
    ),
    Mutant(
        "image-mlx-anywhere",
        "an MLX image runs only on Apple-Silicon Macs",
        "images/compat.py",
        '        if node.platform != "macos-arm64":',
        "        if False:",
        (f"{IMAGES}::test_mlx_on_linux_is_refused_and_runs_on_a_mac",),
    ),
]


def mutated_copy(where: Path, mutant: Mutant | None) -> Path:
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, where / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, where / name)
    if mutant is not None:
        target = where / mutant.path
        text = target.read_text()
        assert text.count(mutant.old) == 1, (
            f"mutant {mutant.id}: the code it breaks is no longer in {mutant.path} exactly once; "
            "update the table to the code as it is now"
        )
        target.write_text(text.replace(mutant.old, mutant.new))
    return where


def run_tests(copy: Path, tests: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "unit",
         *tests],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )  # fmt: skip


@pytest.mark.timeout(900)  # every listed test in one run: a minute here, more on a busy machine
def test_the_unmutated_code_passes_every_listed_test(tmp_path: Path) -> None:
    tests = tuple(sorted({t for m in MUTANTS for t in m.tests}))
    result = run_tests(mutated_copy(tmp_path, None), tests)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.id for m in MUTANTS])
def test_breaking_the_guarantee_fails_its_tests(tmp_path: Path, mutant: Mutant) -> None:
    listed = " ".join(mutant.tests)
    if os.geteuid() != 0 and ("account_creation" in listed or "account_mapping" in listed):
        pytest.skip("needs root: its test creates a real Unix account")
    result = run_tests(mutated_copy(tmp_path, mutant), mutant.tests)
    assert result.returncode == 1, (
        f"'{mutant.guarantee}' was broken ({mutant.id}) and its tests "
        + ("still pass" if result.returncode == 0 else f"could not run ({result.returncode})")
        + ":\n"
        + result.stdout[-3000:]
        + result.stderr[-2000:]
    )
