# A single-producer single-consumer ring of fixed-size records: one sampler thread pushes, drain() pops.

from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from ._atomic cimport bump_u64, load_acquire_u64, store_release_u64


cdef struct gp_ring_t:
    uint8_t* data
    uint64_t item_size
    uint64_t capacity
    uint64_t overflows  # records dropped because the ring was full; written by the producer only
    uint64_t head  # records ever pushed; written by the producer only (release)
    uint8_t pad[56]  # head and tail on different cache lines, so producer and consumer do not share one
    uint64_t tail  # records ever popped; written by the consumer only (release)


cdef inline int ring_alloc(gp_ring_t* ring, uint64_t capacity, uint64_t item_size) noexcept nogil:
    """Allocate ``capacity`` zeroed slots; 0 on success, -1 when out of memory."""
    ring.data = <uint8_t*>calloc(capacity, item_size)
    ring.item_size = item_size
    ring.capacity = capacity
    return 0 if ring.data != NULL else -1


cdef inline void ring_free(gp_ring_t* ring) noexcept nogil:
    """Release the slots (no thread may use the ring any more)."""
    free(ring.data)
    ring.data = NULL
    ring.capacity = 0


cdef inline bint ring_push(gp_ring_t* ring, const void* item) noexcept nogil:
    """Copy one record in (producer); when full, drop it, count the overflow and return False."""
    cdef uint64_t head = ring.head  # only this thread writes head: a plain read is exact
    if head - load_acquire_u64(&ring.tail) >= ring.capacity:
        bump_u64(&ring.overflows, 1)
        return False
    memcpy(ring.data + (head % ring.capacity) * ring.item_size, item, ring.item_size)
    store_release_u64(&ring.head, head + 1)
    return True


cdef inline uint64_t ring_pending(gp_ring_t* ring) noexcept nogil:
    """Records pushed and not yet popped (consumer)."""
    return load_acquire_u64(&ring.head) - ring.tail


cdef inline void ring_pop(gp_ring_t* ring, uint8_t* out, uint64_t n) noexcept nogil:
    """Copy the ``n`` oldest records to ``out`` and free their slots (consumer; n <= ring_pending)."""
    cdef uint64_t first = ring.tail % ring.capacity
    cdef uint64_t before_wrap = ring.capacity - first
    if n <= before_wrap:
        memcpy(out, ring.data + first * ring.item_size, n * ring.item_size)
    else:
        memcpy(out, ring.data + first * ring.item_size, before_wrap * ring.item_size)
        memcpy(out + before_wrap * ring.item_size, ring.data, (n - before_wrap) * ring.item_size)
    store_release_u64(&ring.tail, ring.tail + n)
