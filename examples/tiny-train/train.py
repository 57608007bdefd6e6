#!/usr/bin/env python
"""tiny-train: a CPU "training" program for gpurent's examples and end-to-end tests.

Python 3 standard library only (it runs on the profile's interpreter, e.g.
/root/miniconda3/bin/python on AutoDL). It fits y = 3x + 1 by SGD, one step at a
time, and behaves like a real trainer where gpurent cares:

  * checkpoints atomically (write .tmp, fsync, rename) to OUT/latest.pth every
    --ckpt-every steps, and OUT/best.pth + OUT/best_metrics.json when the loss improves;
  * resumes from OUT/latest.pth when it exists (the step count continues), or from
    $GPURENT_RESUME when set (a Slurm job requeued by gpurent names its checkpoint there);
  * on SIGUSR1 (Slurm's --signal before a time limit or pre-emption) writes
    OUT/latest.pth at the end of the current step and exits 138 (128 + SIGUSR1): the
    batch shell then requeues the job, which resumes from that checkpoint;
  * appends one row per step to OUT/train.csv; writes OUT/test/final/metrics.json at the end;
  * prints "resumed from step N" / "step N/M loss L" / "training finished" (unbuffered
    only when PYTHONUNBUFFERED=1 or -u: gpurent's wrapper sets it).

Fault switches, so every path of the lifecycle runs for real:
  --crash-at N      raise RuntimeError at step N (a real bug: a Traceback)
  --fill-disk       at the end, write OUT/fill.bin until the disk is full, then try to save
  --hang-at-end     do all the work, then hang forever without printing the last line
  --config FILE     JSON with any of the options above (a sweep cell's config)
Checkpoints are pickled dicts ("best.pth" is just a file name; there is no torch here).
"""
import argparse
import json
import os
import pickle
import signal
import sys
import time


def atomic_write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_ckpt(path, state):
    atomic_write(path, pickle.dumps(state))


def load_ckpt(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("GPURENT_OUT", "out"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--step-seconds", type=float, default=0.1)
    ap.add_argument("--ckpt-every", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--crash-at", type=int, default=0)
    ap.add_argument("--fill-disk", action="store_true")
    ap.add_argument("--hang-at-end", action="store_true")
    ap.add_argument("--config", default=None)
    ap.add_argument("--task", default="fit")
    ap.add_argument("--epochs", type=int, default=0, help="if > 0, steps = epochs * 5")
    ap.add_argument("--smoke", action="store_true", help="1-2 steps, no sleeping (the local CPU smoke test)")
    a = ap.parse_args()
    if a.config:
        with open(a.config) as f:
            for k, v in json.load(f).items():
                setattr(a, k.replace("-", "_"), v)
    if a.epochs and a.epochs > 0:
        a.steps = a.epochs * 5
    if a.smoke:
        a.steps, a.step_seconds = 2, 0.0
    return a


def loss_of(w, b):
    xs = [i / 10.0 for i in range(-10, 11)]
    return sum((w * x + b - (3 * x + 1)) ** 2 for x in xs) / len(xs)


def grad(w, b):
    xs = [i / 10.0 for i in range(-10, 11)]
    gw = sum(2 * (w * x + b - (3 * x + 1)) * x for x in xs) / len(xs)
    gb = sum(2 * (w * x + b - (3 * x + 1)) for x in xs) / len(xs)
    return gw, gb


def main():
    a = parse()
    os.makedirs(a.out, exist_ok=True)
    latest = os.path.join(a.out, "latest.pth")
    best_path = os.path.join(a.out, "best.pth")
    state = {"step": 0, "w": 0.0, "b": 0.0, "best": None, "task": a.task}
    stop = []
    signal.signal(signal.SIGUSR1, lambda *_: stop.append(True))
    resume = os.environ.get("GPURENT_RESUME") or latest
    if os.environ.get("GPURENT_RESUME"):
        print("resume checkpoint from GPURENT_RESUME: %s" % resume)
    if os.path.exists(resume):
        state = load_ckpt(resume)
        print("resumed from step %d" % state["step"])
    else:
        print("starting from scratch: %d steps, task %s" % (a.steps, a.task))
    csv = os.path.join(a.out, "train.csv")
    if not os.path.exists(csv):
        with open(csv, "w") as f:
            f.write("step,loss\n")
    while state["step"] < a.steps:
        step = state["step"] + 1
        if a.crash_at and step == a.crash_at:
            raise RuntimeError("crash requested at step %d (--crash-at)" % step)
        gw, gb = grad(state["w"], state["b"])
        state["w"] -= a.lr * gw
        state["b"] -= a.lr * gb
        state["step"] = step
        loss = loss_of(state["w"], state["b"])
        with open(csv, "a") as f:
            f.write("%d,%.6f\n" % (step, loss))
        print("step %d/%d loss %.6f" % (step, a.steps, loss))
        if state["best"] is None or loss < state["best"]:
            state["best"] = loss
            if step % a.ckpt_every == 0 or step == a.steps:
                save_ckpt(best_path, {"step": step, "w": state["w"], "b": state["b"], "loss": loss})
                atomic_write(os.path.join(a.out, "best_metrics.json"),
                             json.dumps({"step": step, "loss": loss}, sort_keys=True).encode())
        if step % a.ckpt_every == 0 or step == a.steps:
            save_ckpt(latest, state)
        if stop and step < a.steps:
            save_ckpt(latest, state)
            print("SIGUSR1: checkpoint written at step %d (latest.pth); exiting for the requeue" % step)
            sys.exit(128 + signal.SIGUSR1)
        time.sleep(a.step_seconds)
    if a.fill_disk:
        try:
            with open(os.path.join(a.out, "fill.bin"), "wb") as f:
                chunk = b"\0" * (1 << 20)
                while True:
                    f.write(chunk)
                    f.flush()
        except OSError as e:
            print("fill: %s" % e)
        # the final save now fails the way a real one does on a full disk
        with open(os.path.join(a.out, "final.pth"), "wb") as f:
            f.write(pickle.dumps(state) * 1000)
            f.flush()
            os.fsync(f.fileno())
    test_dir = os.path.join(a.out, "test", "final")
    os.makedirs(test_dir, exist_ok=True)
    atomic_write(os.path.join(test_dir, "metrics.json"),
                 json.dumps({"steps": state["step"], "loss": loss_of(state["w"], state["b"]),
                             "w": state["w"], "b": state["b"]}, sort_keys=True).encode())
    if a.hang_at_end:
        while True:
            time.sleep(3600)
    print("training finished: %d steps" % state["step"])


if __name__ == "__main__":
    main()
