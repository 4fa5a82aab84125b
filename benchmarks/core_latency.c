// Core-to-core round trip of one cache line between two CPUs (benchmarks/core_latency.py).
// Two threads, pinned to cpu_a and cpu_b, hand a counter back and forth through one
// cache-line-aligned atomic: each round trip moves the line from one core to the other
// and back. Returns nanoseconds per round trip, or -1 when a thread cannot be pinned.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

static _Alignas(128) atomic_long flag;
static long rounds;

static int pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

struct partner { int cpu, ok; };

static void* answer(void* arg) {
  struct partner* p = arg;
  p->ok = pin(p->cpu) == 0;
  for (long i = 0; i < rounds; ++i) {
    while (atomic_load_explicit(&flag, memory_order_acquire) != 2 * i + 1) {
    }
    atomic_store_explicit(&flag, 2 * i + 2, memory_order_release);
  }
  return 0;
}

double round_trip_ns(int cpu_a, int cpu_b, long n) {
  cpu_set_t old;
  pthread_getaffinity_np(pthread_self(), sizeof old, &old);
  if (pin(cpu_a) != 0) return -1;
  rounds = n;
  atomic_store(&flag, 0);
  struct partner p = {cpu_b, 0};
  pthread_t t;
  if (pthread_create(&t, 0, answer, &p) != 0) {
    pthread_setaffinity_np(pthread_self(), sizeof old, &old);
    return -1;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long i = 0; i < n; ++i) {
    atomic_store_explicit(&flag, 2 * i + 1, memory_order_release);
    while (atomic_load_explicit(&flag, memory_order_acquire) != 2 * i + 2) {
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  pthread_join(t, 0);
  pthread_setaffinity_np(pthread_self(), sizeof old, &old);
  if (!p.ok) return -1;
  return ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n;
}
