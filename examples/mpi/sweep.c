/* A parameter sweep over MPI ranks: the Izhikevich neuron's input current I over N values,
 * rk4, each rank running its slice as one dynlib ensemble, checkpointing it atomically every K
 * steps, rank 0 gathering the final states (MPI_Gatherv) and spike counts.
 *
 * A rank restarted with the same arguments (same number of ranks) imports its checkpoint and
 * continues; the final states are bit-identical to an uninterrupted run, and to a run on any
 * other number of ranks, because every member is an independent exact simulation.
 *
 * usage: mpirun -np R sweep [--n 4000] [--T 1000] [--every 10000] [--dir ckpt]
 *                           [--out final_states.bin] [--threads 1] [--stop-after P]
 *   --every K       checkpoint every K steps (dt = 0.01)
 *   --stop-after P  exit abruptly (no MPI_Finalize, exit code 3) after this process wrote its
 *                   P-th checkpoint: a crash stand-in for testing restart
 *   --out FILE      rank 0 writes the n x 2 final states (v, u) as raw float64, row-major
 *
 * build: mpicc -std=c99 -O2 -I include examples/mpi/sweep.c -L target/release -ldynlib \
 *          -Wl,-rpath,$PWD/target/release -lm -o sweep */
#define _POSIX_C_SOURCE 200809L /* access, _exit, mkdir */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dynlib.h"

static int rank = 0;

static void die(const char *what, DynlibStatus st) {
  fprintf(stderr, "rank %d: %s failed: %s: %s\n", rank, what, dynlib_status_name(st),
          dynlib_last_error());
  MPI_Abort(MPI_COMM_WORLD, 2);
}

#define TRY(call)                                                                          \
  do {                                                                                     \
    DynlibStatus st_ = (call);                                                             \
    if (st_ != DYNLIB_OK) die(#call, st_);                                                 \
  } while (0)

int main(int argc, char **argv) {
  long n_total = 4000, every = 10000, stop_after = -1;
  double T = 1000.0;
  size_t threads = 1;
  const char *dir = "sweep-checkpoints", *out = NULL;
  MPI_Init(&argc, &argv);
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (v == NULL) {
      fprintf(stderr, "option %s needs a value\n", a);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (!strcmp(a, "--n")) n_total = atol(v);
    else if (!strcmp(a, "--T")) T = atof(v);
    else if (!strcmp(a, "--every")) every = atol(v);
    else if (!strcmp(a, "--dir")) dir = v;
    else if (!strcmp(a, "--out")) out = v;
    else if (!strcmp(a, "--threads")) threads = (size_t)atol(v);
    else if (!strcmp(a, "--stop-after")) stop_after = atol(v);
    else {
      fprintf(stderr, "unknown option %s\n", a);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    i++;
  }
  if (n_total < size || every < 1 || !(T > 0)) {
    if (rank == 0) fprintf(stderr, "need n >= ranks, every >= 1, T > 0\n");
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  const double dt = 0.01, I_lo = 0.0, I_hi = 20.0;

  /* Block decomposition: rank r owns members [lo, hi). */
  long base = n_total / size, extra = n_total % size;
  long lo = rank * base + (rank < extra ? rank : extra);
  long count = base + (rank < extra ? 1 : 0);
  double *I = malloc((size_t)count * sizeof(double));
  for (long j = 0; j < count; j++) I[j] = I_lo + (I_hi - I_lo) * (double)(lo + j) / (double)n_total;

  DynlibModel *model = NULL;
  DynlibEnsemble *ens = NULL;
  TRY(dynlib_model_load("builtin://ode/izhikevich", "rk4", &model));
  TRY(dynlib_ensemble_new(model, (size_t)count, &ens));
  TRY(dynlib_ensemble_set_param_column(ens, "I", I, (size_t)count));

  /* This rank's checkpoint: one file for its whole slice, replaced atomically. */
  mkdir(dir, 0755);
  char path[4096];
  snprintf(path, sizeof path, "%s/rank-%04d-of-%04d.npz", dir, rank, size);
  long piece = 0; /* pieces of `every` steps done */
  if (access(path, F_OK) == 0) {
    TRY(dynlib_ensemble_import_checkpoint(ens, path));
    uint64_t step = 0;
    size_t needed = 0;
    uint64_t *steps = malloc((size_t)count * sizeof(uint64_t));
    TRY(dynlib_ensemble_step_counts(ens, steps, (size_t)count, &needed));
    step = steps[0];
    free(steps);
    piece = (long)(step / (uint64_t)every);
    printf("rank %d: restarted from %s at step %llu\n", rank, path, (unsigned long long)step);
  }

  long n_steps = (long)llround(T / dt);
  long n_pieces = (n_steps + every - 1) / every;
  long written = 0;
  DynlibRunOptions o;
  dynlib_run_options_init(&o);
  o.record = 0; /* reductions only: O(states) memory per member */
  o.dt = dt;
  for (; piece < n_pieces; piece++) {
    long end = (piece + 1) * every < n_steps ? (piece + 1) * every : n_steps;
    o.T = (double)end * dt;
    o.resume = piece > 0;
    if (o.resume) o.dt = NAN; /* a resumed run keeps the session's step */
    DynlibStatus st = dynlib_ensemble_run(ens, &o, threads);
    if (st != DYNLIB_OK) {
      size_t failed = 0;
      dynlib_ensemble_n_failed(ens, &failed);
      fprintf(stderr, "rank %d: %zu members failed: %s\n", rank, failed, dynlib_last_error());
    }
    if (end < n_steps) {
      TRY(dynlib_ensemble_export_checkpoint(ens, path));
      if (++written == stop_after) {
        fprintf(stderr, "rank %d: --stop-after %ld: exiting abruptly at step %ld\n", rank,
                stop_after, end);
        fflush(NULL);
        _exit(3);
      }
    }
  }

  /* Gather the final states and spike counts on rank 0. */
  size_t needed = 0;
  double *y = malloc((size_t)count * 2 * sizeof(double));
  uint64_t *spikes = malloc((size_t)count * sizeof(uint64_t));
  TRY(dynlib_ensemble_final_states(ens, y, (size_t)count * 2, &needed));
  TRY(dynlib_ensemble_event_counts(ens, spikes, (size_t)count, &needed));
  int *counts = NULL, *displs = NULL, *counts1 = NULL, *displs1 = NULL;
  double *all = NULL;
  uint64_t *all_spikes = NULL;
  if (rank == 0) {
    counts = malloc((size_t)size * sizeof(int));
    displs = malloc((size_t)size * sizeof(int));
    counts1 = malloc((size_t)size * sizeof(int));
    displs1 = malloc((size_t)size * sizeof(int));
    for (int r = 0; r < size; r++) {
      long c = base + (r < extra ? 1 : 0), l = r * base + (r < extra ? r : extra);
      counts[r] = (int)(2 * c);
      displs[r] = (int)(2 * l);
      counts1[r] = (int)c;
      displs1[r] = (int)l;
    }
    all = malloc((size_t)n_total * 2 * sizeof(double));
    all_spikes = malloc((size_t)n_total * sizeof(uint64_t));
  }
  MPI_Gatherv(y, (int)(2 * count), MPI_DOUBLE, all, counts, displs, MPI_DOUBLE, 0,
              MPI_COMM_WORLD);
  MPI_Gatherv(spikes, (int)count, MPI_UINT64_T, all_spikes, counts1, displs1, MPI_UINT64_T, 0,
              MPI_COMM_WORLD);
  if (rank == 0) {
    printf("sweep: %ld values of I in [%g, %g), T = %g ms, dt = %g, rk4, %d rank(s)\n", n_total,
           I_lo, I_hi, T, dt, size);
    for (long j = 0; j < n_total; j += n_total / 8 > 0 ? n_total / 8 : 1)
      printf("  I = %7.3f: v = %.17g, u = %.17g, spikes = %llu\n",
             I_lo + (I_hi - I_lo) * (double)j / (double)n_total, all[2 * j], all[2 * j + 1],
             (unsigned long long)all_spikes[j]);
    if (out) {
      FILE *f = fopen(out, "wb");
      if (!f || fwrite(all, sizeof(double), (size_t)n_total * 2, f) != (size_t)n_total * 2) {
        fprintf(stderr, "cannot write %s\n", out);
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
      fclose(f);
      printf("final states written to %s\n", out);
    }
    free(counts);
    free(displs);
    free(counts1);
    free(displs1);
    free(all);
    free(all_spikes);
  }
  free(y);
  free(spikes);
  free(I);
  dynlib_ensemble_free(ens);
  dynlib_model_free(model);
  MPI_Finalize();
  return 0;
}
