"""Slurm, as commands and their outputs: the pieces the Slurm placement backend is built from.

Each module is one idea, pure where it can be, and tested against outputs captured from a real
Slurm 22.05 (tests/unit/slurm_outputs/):

- :mod:`.run`: run one command (an argument list, never a shell string), optionally as a user's
  own Unix account; never raises because the command failed.
- :mod:`.queue`: one ``squeue`` for many jobs, parsed; running / gone / unknown per job; queue
  position.
- :mod:`.reasons`: Slurm's pending reasons in plain words for the person waiting.
- :mod:`.partitions`: partitions and nodes as Slurm reports them; which requests can never run.
- :mod:`.script`: the batch script, rendered only from validated values; the Apptainer command.
- :mod:`.submit`: ``sbatch`` and ``scancel`` command lines, the job id, sbatch's refusals in words.

Command names are data (a site may need ``/opt/slurm/bin/squeue`` or a wrapper): every builder
takes the command as a sequence of strings, the way batchspawner takes ``batch_query_cmd``.
"""
