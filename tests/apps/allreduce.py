#!/usr/bin/python3
"""mpi4py twin of mpi_allreduce.c: ITERS allreduces, SLEEP_MS apart, printing
the same lines (rank 0), so the tests check it against the same reference."""
import sys
import time

from mpi4py import MPI


def main():
    iters, sleep_ms = int(sys.argv[1]), int(sys.argv[2])
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if rank == 0:
        print(f"start ranks {size}", flush=True)
    acc = 0
    for i in range(1, iters + 1):
        mine = (rank + 1) * i * i % 1000003
        total = comm.allreduce(mine, op=MPI.SUM)
        acc += total
        if rank == 0:
            print(f"iter {i} sum {total} acc {acc}", flush=True)
        time.sleep(sleep_ms / 1000)
    if rank == 0:
        print(f"result {acc} ranks {size} iters {iters}", flush=True)


if __name__ == "__main__":
    main()
