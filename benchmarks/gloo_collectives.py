"""gloo collectives on CPU at the digits recipe's sizes: what one DDP all-reduce of the 0.4 M-parameter
model (1.6 MB) costs against the same bytes in smaller buckets, and the latency of the small
collectives a step makes (loss all-mean, embedding all-gather, barrier). Wall and CPU per call on
rank 0 (main thread; whole process, gloo's threads included), 200 calls each:

    OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc-per-node 2 benchmarks/gloo_collectives.py
"""

import time

import torch
import torch.distributed as dist


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()

    def bench(name, fn, n=200):
        for _ in range(10):
            fn()
        dist.barrier()
        start = (time.perf_counter(), time.thread_time(), time.process_time())
        for _ in range(n):
            fn()
        end = (time.perf_counter(), time.thread_time(), time.process_time())
        w, c, p = ((b - a) / n * 1e3 for a, b in zip(start, end))
        if rank == 0:
            print(f"{name:<40} wall {w:7.3f} ms  main-thread CPU {c:6.3f}  process CPU {p:6.3f}", flush=True)

    g = torch.randn(400_000)  # (0.4 M,) float32 = 1.6 MB: the digits model's gradients
    bench("all_reduce 1.6 MB", lambda: dist.all_reduce(g))
    for mb in (0.4, 0.1):
        t = torch.randn(int(mb * 2**20 / 4))
        k = int(1.6 / mb)
        bench(f"{k} x all_reduce {mb} MB", lambda: [dist.all_reduce(t) for _ in range(k)])
        bench(f"{k} x all_reduce {mb} MB async",
              lambda: [w.wait() for w in [dist.all_reduce(t, async_op=True) for _ in range(k)]])
    s = torch.zeros(2)
    bench("all_reduce 2 floats", lambda: dist.all_reduce(s))
    e = torch.randn(64, 64)
    bench("all_gather (64, 64)", lambda: dist.all_gather([torch.empty_like(e) for _ in range(2)], e))
    bench("barrier", lambda: dist.barrier())
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
