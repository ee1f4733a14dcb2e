"""The queue model's discharge (:meth:`RoutingCore._discharge_queues`) as one compiled loop.

The numpy discharge spends most of a congested step in many small array calls over a few
dozen queued vehicles. :func:`discharge_queues` does the same work in one numba kernel, step
for step the same arithmetic in the same order (the closed-form FIFO times, the signal waits,
the first-come-first-served admission, the sequential ``ufunc.at`` updates), so every result
is bit for bit that of the numpy path, which stays the reference (:data:`COMPILED` is False
where numba's JIT is off, e.g. ``NUMBA_DISABLE_JIT=1`` in the test suite: the numpy path
runs). ``tests/test_core_kernel.py`` checks the two paths give the same state at every step.
"""

from __future__ import annotations

import numba
import numpy as np

#: whether the core uses the compiled discharge (numba's JIT on)
COMPILED = not numba.config.DISABLE_JIT

_QUEUED, _AT_NODE, _ON_EDGE, _ARRIVED = 2, 1, 3, 4
_EPS = 1e-9


@numba.njit(cache=True)
def _max(a, b):
    """``np.maximum`` of two floats (the first where equal, NaN from the first)."""
    return a if a >= b or a != a else b


@numba.njit(cache=True)
def _stored(active, v_status, v_edge, next_slot, ready_s, count, n_edges):
    """:attr:`RoutingCore.stored` (the same counts)."""
    queued = np.zeros(n_edges + 1, dtype=np.int64)
    for a in active:
        if v_status[a] == _QUEUED:
            queued[v_edge[a] + 1] += 1
    out = count[:n_edges].copy()
    for a in active:
        at = v_edge[a]
        if v_status[a] == _AT_NODE and at >= 0 and queued[at + 1] == 0 and \
                next_slot[at] <= ready_s[a] + _EPS:
            out[at] -= 1
    return out


@numba.njit(cache=True)
def discharge_queues(active, retry, use_retry, t1, recount, blocking, stuck_time_s,
                     v_status, v_edge, v_node, next_edge, ready_s, entered_s, clock_s,
                     head_since, v_arrival, count, next_slot, blocked_on, blocked_since,
                     entries, traversal_s, src_key, headway, most, storage, freeflow_s,
                     edge_dst, signals, controlled, green_start, green_s, cycle_s):
    """:meth:`RoutingCore._discharge` of the queue model (with :meth:`_gate`, :meth:`_fifo`,
    :meth:`_wait_for_green`, :meth:`_admit`, :meth:`_move`), updating the state arrays in
    place. ``count``, ``next_slot``, ``blocked_on``, ``headway``, ``src_key``, ``most`` are
    the core's padded arrays (``_count`` ...; index -1: origins). Returns ``(arrived, held,
    entered, left_src, left_go, left_slot, has_left, blocking, forced, lv, ld, lfrom, lto,
    lentered)``: ``l*`` the vehicles that left, in order (for the records)."""
    n_edges = storage.size
    arrive = n_edges
    lim = t1 + _EPS
    # the queued vehicles (on the retried edges)
    q = np.empty(active.size, dtype=np.int64)
    n = 0
    for a in active:
        if v_status[a] == _QUEUED and (not use_retry or retry[v_edge[a]]):
            q[n] = a
            n += 1
    q = q[:n]
    stored = np.empty(0, dtype=np.int64)
    have_stored = False
    held = np.empty(0, dtype=np.int64)
    forced = 0
    empty_i = np.empty(0, dtype=np.int64)
    empty_f = np.empty(0)
    empty_b = np.empty(0, dtype=np.bool_)
    # ---- gate: queues whose head waits for an edge still full stay out
    if blocking:
        ge = np.empty(n, dtype=np.int64)
        full = np.zeros(n, dtype=np.bool_)
        any_full = False
        for j in range(n):
            ge[j] = v_edge[q[j]]
            if blocked_on[ge[j]] >= 0:
                full[j] = True
                any_full = True
        if not any_full:
            still = False
            for k in range(n_edges):
                if blocked_on[k] >= 0:
                    still = True
                    break
            if not still:
                blocking = False
        else:
            any_full = False
            for j in range(n):
                if full[j]:
                    w = blocked_on[ge[j]]
                    full[j] = count[w] >= storage[w] and \
                        t1 - blocked_since[ge[j]] < stuck_time_s
                    any_full |= full[j]
            if recount and any_full:
                stored = _stored(active, v_status, v_edge, next_slot, ready_s, count, n_edges)
                have_stored = True
                any_full = False
                for j in range(n):
                    if full[j]:
                        w = blocked_on[ge[j]]
                        full[j] = stored[w] >= storage[w]
                        any_full |= full[j]
            if any_full:
                held = np.empty(n, dtype=np.int64)
                nh = 0
                keep = 0
                for j in range(n):
                    if full[j]:
                        next_slot[ge[j]] = _max(next_slot[ge[j]], t1)
                for j in range(n):
                    v = q[j]
                    if full[j]:
                        held[nh] = v
                        nh += 1
                        clock_s[v] = _max(clock_s[v], t1) if recount else t1
                    else:
                        q[keep] = v
                        keep += 1
                held = held[:nh]
                q = q[:keep]
                n = keep
    if n == 0:
        return (q, held, q, empty_i, empty_b, empty_f, False, blocking, 0,
                empty_i, empty_f, empty_i, empty_i, empty_f)
    # ---- FIFO per edge: by stop-line time, then vehicle id (q ascending, the sort stable)
    key = np.empty(n)
    for j in range(n):
        key[j] = src_key[v_edge[q[j]]] + ready_s[q[j]]
    order = np.argsort(key, kind="mergesort")
    q = q[order]
    src = np.empty(n, dtype=np.int64)
    slot = np.empty(n)
    for j in range(n):
        src[j] = v_edge[q[j]]
        slot[j] = next_slot[src[j]]
    # ---- cannot leave (long queues): the first few of each queue only
    everyone = False
    out = empty_b
    n_out = 0
    if n >= 64:
        out = np.zeros(n, dtype=np.bool_)
        first = 0
        for j in range(n):
            if j and src[j] != src[j - 1]:
                first = j
            out[j] = (j - first) * headway[src[j]] + slot[j] > lim
            if out[j]:
                n_out += 1
        if 2 * n_out >= n:
            everyone = True
    q_all, src_all, slot_all = q, src, slot
    if everyone:
        m = n - n_out
        q, src, slot = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64), np.empty(m)
        i = 0
        for j in range(n):
            if not out[j]:
                q[i], src[i], slot[i] = q_all[j], src_all[j], slot_all[j]
                i += 1
        n = m
    # ---- FIFO discharge times (the closed form of RoutingCore._fifo)
    depart = np.empty(n)
    for j in range(n):
        depart[j] = _max(slot[j], clock_s[q[j]])
    one_each = True
    k = 0
    while k < n and src[k] < 0:
        k += 1
    k += 1
    has_behind = False
    start = np.ones(n, dtype=np.bool_)
    if k < n:
        for j in range(k, n):
            if src[j] == src[j - 1]:
                start[j] = False
                has_behind = True
    if has_behind:
        second_by_t1 = False
        for j in range(k, n):
            if not start[j] and slot[j] + headway[src[j]] <= lim:
                second_by_t1 = True
                break
        if not second_by_t1:
            for j in range(k, n):
                if not start[j]:
                    depart[j] = np.inf
        else:
            one_each = False
            first = 0
            top = 0.0
            for j in range(n):
                if start[j]:
                    first = j
                jh = (j - first) * headway[src[j]]
                b = ready_s[q[j]] - jh
                if start[j] or b > top:
                    top = b
                depart[j] = _max(jh + _max(slot[j], top), clock_s[q[j]])
    # ---- signals: those crossing a light wait for green (RoutingCore._wait_for_green)
    if signals:
        cand = np.zeros(n, dtype=np.bool_)
        for j in range(n):
            cand[j] = controlled[src[j]] and depart[j] <= lim
        prev = -1  # the previous candidate
        for j in range(n):
            if not cand[j]:
                continue
            e = src[j]
            if prev >= 0 and src[prev] == e:  # behind a candidate of its own queue
                if depart[j - 1] <= lim:
                    v = q[j]
                    t = _max(_max(ready_s[v], depart[j - 1] + headway[e]), clock_s[v])
                else:
                    depart[j] = np.inf
                    prev = j
                    continue
            else:
                t = depart[j]
            if next_edge[q[j]] < arrive:
                u = np.fmod(t - green_start[e], cycle_s)  # (np.mod, as numpy computes it)
                if u != 0.0 and (u < 0.0) != (cycle_s < 0.0):
                    u += cycle_s
                if u >= green_s[e]:
                    t = t + (cycle_s - u)
            depart[j] = t
            prev = j
    can = np.empty(n, dtype=np.bool_)
    target = np.empty(n, dtype=np.int64)
    for j in range(n):
        can[j] = depart[j] <= lim
        target[j] = next_edge[q[j]]
    # ---- count the entries in; rank them only where an edge would be over what it holds
    for j in range(n):
        if can[j] and target[j] < arrive:
            count[target[j]] += 1
    over = False
    for j in range(n):
        if can[j] and count[target[j]] > most[target[j]]:
            over = True
            break
    admitted = False
    go = can
    if over:
        for j in range(n):
            if can[j] and target[j] < arrive:
                count[target[j]] -= 1
        admitted = True
        go, blocking, forced, held = _admit(
            q, src, target, depart, can, start, has_behind, t1, recount, stored, have_stored,
            active, v_status, v_edge, ready_s, count, next_slot, blocked_on, blocked_since,
            head_since, storage, stuck_time_s, held, blocking, n_edges)
    # the vehicles that leave, in order
    n_go = 0
    for j in range(n):
        if go[j]:
            n_go += 1
    lv = np.empty(n_go, dtype=np.int64)
    ld = np.empty(n_go)
    lfrom = np.empty(n_go, dtype=np.int64)
    lto = np.empty(n_go, dtype=np.int64)
    i = 0
    for j in range(n):
        if go[j]:
            lv[i], ld[i], lfrom[i], lto[i] = q[j], depart[j], src[j], target[j]
            i += 1
    if everyone:
        went = np.zeros(q_all.size, dtype=np.bool_)
        i = 0
        for j in range(q_all.size):
            if not out[j]:
                went[j] = go[i]
                i += 1
        go = went
    q, src, slot = q_all, src_all, slot_all
    for j in range(q.size):
        v = q[j]
        if recount:
            if not go[j]:
                clock_s[v] = _max(clock_s[v], t1)
        else:
            clock_s[v] = t1
    has_left = admitted or has_behind or everyone or signals
    # ---- move (RoutingCore._move): leave the edges, enter the next ones or arrive
    lentered = np.empty(n_go)
    n_gone = 0
    for j in range(n_go):
        v, f, d = lv[j], lfrom[j], ld[j]
        lentered[j] = entered_s[v]
        if f >= 0:
            blocked_on[f] = -1
            if one_each:
                next_slot[f] = d + headway[f]
            else:
                next_slot[f] = _max(next_slot[f], d + headway[f])
            count[f] -= 1
            traversal_s[f] += d - entered_s[v]
        clock_s[v] = d
        head_since[v] = np.nan
        next_edge[v] = -1
        if lto[j] == arrive:
            n_gone += 1
    gone = np.empty(n_gone, dtype=np.int64)
    entered = np.empty(n_go - n_gone, dtype=np.int64)
    ia = ib = 0
    for j in range(n_go):
        v, to, d = lv[j], lto[j], ld[j]
        if to == arrive:
            v_status[v] = _ARRIVED
            v_arrival[v] = d
            v_edge[v] = -1
            gone[ia] = v
            ia += 1
        else:
            entered[ib] = v
            ib += 1
            if admitted:  # (else counted in before the ranking)
                count[to] += 1
            entries[to] += 1
            v_status[v] = _ON_EDGE
            v_edge[v] = to
            v_node[v] = edge_dst[to]
            entered_s[v] = d
            ready = d + freeflow_s[to]
            ready_s[v] = ready
            clock_s[v] = ready if ready <= t1 or ready != ready else t1
    return (gone, held, entered, src, go, slot, has_left, blocking, forced,
            lv, ld, lfrom, lto, lentered)


@numba.njit(cache=True)
def _admit(q, src, target, depart, can, start, has_behind, t1, recount, stored, have_stored,
           active, v_status, v_edge, ready_s, count, next_slot, blocked_on, blocked_since,
           head_since, storage, stuck_time_s, held, blocking, n_edges):
    """:meth:`RoutingCore._admit`: which of ``q`` leave; returns ``(go, blocking, forced,
    held)`` (``held`` with the vehicles a full edge holds appended)."""
    n = q.size
    arrive = n_edges
    entries = np.zeros(n_edges, dtype=np.int64)
    n_in = 0
    for j in range(n):
        if can[j] and target[j] < arrive:
            entries[target[j]] += 1
            n_in += 1
    if recount and not have_stored:
        stored = _stored(active, v_status, v_edge, next_slot, ready_s, count, n_edges)
    tq = np.empty(n_in, dtype=np.int64)
    room_of = np.empty(n_in)
    over = False
    i = 0
    for j in range(n):
        if can[j] and target[j] < arrive:
            w = target[j]
            room = storage[w] - (stored[w] if recount else count[w])
            room_of[i] = room
            tq[i] = j
            i += 1
            over |= entries[w] > room
    if not over:
        return can, blocking, 0, held
    # rank the entries per edge, first come first served: by (edge, time, vehicle)
    by = np.argsort(q[tq], kind="mergesort")
    by = by[np.argsort(depart[tq][by], kind="mergesort")]
    by = by[np.argsort(target[tq][by], kind="mergesort")]
    fits = np.zeros(n, dtype=np.bool_)
    first = 0
    for r in range(n_in):
        if r and target[tq[by[r]]] != target[tq[by[r - 1]]]:
            first = r
        fits[tq[by[r]]] = r - first < room_of[by[r]]
    go = np.zeros(n, dtype=np.bool_)
    stuck = np.zeros(n, dtype=np.bool_)
    forced = 0
    blocked = False  # a vehicle of this queue so far could not go
    for j in range(n):
        leaving = target[j] == arrive
        stuck[j] = can[j] and not leaving and t1 - head_since[q[j]] >= stuck_time_s
        ok = can[j] and (leaving or fits[j] or stuck[j])
        if src[j] >= 0:
            if start[j]:
                blocked = False
            blocked |= not ok
            go[j] = not blocked
        else:
            go[j] = ok
        if go[j] and stuck[j] and not fits[j]:
            forced += 1
    n_held = 0
    for j in range(n):
        if can[j] and not go[j]:
            n_held += 1
    if n_held:
        for j in range(n):
            h = can[j] and not go[j]
            if h and (start[j] or src[j] < 0):
                v = q[j]
                if head_since[v] != head_since[v]:
                    head_since[v] = t1
        more = np.empty(held.size + n_held, dtype=np.int64)
        more[: held.size] = held
        i = held.size
        for j in range(n):
            if can[j] and not go[j]:
                more[i] = q[j]
                i += 1
        held = more
        for j in range(n):
            if can[j] and not go[j] and src[j] >= 0 and start[j]:
                e = src[j]
                next_slot[e] = _max(next_slot[e], t1)
                blocked_on[e] = target[j]
                blocked_since[e] = head_since[q[j]]
        blocking = True
    return go, blocking, forced, held



@numba.njit(cache=True)
def cost_to_go_rows(indptr, indices, data, targets, n_nodes, need_ptr, need):
    """``(rows, complete)``: ``rows[r]`` the cheapest cost from every node to ``targets[r]``
    on the reversed graph ``(indptr, indices, data)`` (CSR, non-negative weights), what
    ``scipy.sparse.csgraph.dijkstra(graph, indices=targets)`` gives, bit for bit: a binary
    heap instead of scipy's Fibonacci heap settles nodes in another order among ties, but each
    node's cost is the least ``cost(u) + w`` over its settled neighbours either way (a later
    neighbour's cost is no lower, weights are non-negative), the same floating-point sums,
    so the same values (inf where a target cannot be reached).

    ``need_ptr`` (empty: every row complete) and ``need``: target ``r`` is searched only until
    the nodes ``need[need_ptr[r]:need_ptr[r + 1]]`` are settled; the row then holds the exact
    cost of every node settled so far (the needed ones, and every node cheaper than the last
    of them) and inf elsewhere (``complete[r]`` False), an upper bound of the true cost."""
    out = np.full((targets.size, n_nodes), np.inf)
    complete = np.ones(targets.size, dtype=np.bool_)
    done = np.zeros(n_nodes, dtype=np.bool_)
    wanted = np.zeros(n_nodes, dtype=np.bool_)
    cap = data.size + 1
    heap_d = np.empty(cap)
    heap_v = np.empty(cap, dtype=np.int64)
    partial = need_ptr.size > 0
    for r in range(targets.size):
        dist = out[r]
        done[:] = False
        left = -1  # needed nodes not settled yet (-1: every node)
        if partial:
            left = 0
            for j in range(need_ptr[r], need_ptr[r + 1]):
                if not wanted[need[j]]:
                    wanted[need[j]] = True
                    left += 1
        t = targets[r]
        dist[t] = 0.0
        heap_d[0], heap_v[0] = 0.0, t
        size = 1
        while size and left != 0:
            d, v = heap_d[0], heap_v[0]
            size -= 1
            if size:  # the last entry sifts down from the root
                ld, lv = heap_d[size], heap_v[size]
                i = 0
                while True:
                    c = 2 * i + 1
                    if c >= size:
                        break
                    if c + 1 < size and heap_d[c + 1] < heap_d[c]:
                        c += 1
                    if heap_d[c] < ld:
                        heap_d[i], heap_v[i] = heap_d[c], heap_v[c]
                        i = c
                    else:
                        break
                heap_d[i], heap_v[i] = ld, lv
            if done[v] or d > dist[v]:
                continue
            done[v] = True
            if wanted[v]:
                left -= 1
            for j in range(indptr[v], indptr[v + 1]):
                u = indices[j]
                if done[u]:
                    continue
                nd = d + data[j]
                if nd < dist[u]:
                    dist[u] = nd
                    i = size  # push: sift up
                    size += 1
                    while i:
                        p = (i - 1) // 2
                        if heap_d[p] > nd:
                            heap_d[i], heap_v[i] = heap_d[p], heap_v[p]
                            i = p
                        else:
                            break
                    heap_d[i], heap_v[i] = nd, u
        if partial:
            for j in range(need_ptr[r], need_ptr[r + 1]):
                wanted[need[j]] = False
            if size:  # stopped early: what is not settled is unknown
                complete[r] = False
                for u in range(n_nodes):
                    if not done[u]:
                        dist[u] = np.inf
    return out, complete


@numba.njit(cache=True)
def floor_choice(cost, lower, valid, edges, edge_dst, rise, tails, xy, pace, table, rows,
                 slack):
    """:meth:`relied.env.live.LiveCostToGo._floor_choice` after its checks: ``(sure, pick)``
    per learner. The same bounds in one loop; sums of rises may round in another order than
    numpy's, which the bounds' ``slack`` (far above float rounding) absorbs: a sure pick is
    the exact argmin either way, so the choices are the same."""
    m, k = lower.shape
    sure = np.zeros(m, dtype=np.bool_)
    pick = np.zeros(m, dtype=np.int64)
    via = np.empty(k)
    for i in range(m):
        best = 0
        for j in range(k):
            via[j] = cost[edges[i, j]] + lower[i, j] if valid[i, j] else np.inf
            if via[j] < via[best]:
                best = j
        top = via[best]
        if rise.size:
            reach = lower[i, best] * (1 + slack) + slack
            head = edge_dst[edges[i, best]]
            hx, hy = xy[head, 0], xy[head, 1]
            extra = 0.0
            for r in range(rise.size):
                tl = tails[r]
                gap = np.hypot(xy[tl, 0] - hx, xy[tl, 1] - hy) * pace + table[rows[i], tl]
                if gap <= reach:
                    extra += rise[r]
            top = top + extra
        other = np.inf
        for j in range(k):
            if j != best and via[j] < other:
                other = via[j]
        top += abs(top) * slack + slack
        sure[i] = top < other
        pick[i] = best
    return sure, pick


@numba.njit(cache=True)
def bounded_choice(cost, dests, inv, bounded, edges, heads, valid, lower, row_of, born_of,
                   rows, ring, ring_key, edge_src, slack):
    """:meth:`relied.env.live.LiveCostToGo._bounded_choice`: ``(sure, pick)`` per deciding
    learner from the rows of its destination (``row_of[node]``, computed at step
    ``born_of[row]``, the costs of then in ``ring``) and the cost increases since. The same
    bounds in loops; sums of increases may round in another order than numpy's, which
    ``slack`` absorbs (a sure pick is the exact argmin either way: the same choices)."""
    m, k = edges.shape
    sure = np.zeros(m, dtype=np.bool_)
    pick = np.zeros(m, dtype=np.int64)
    n_ring = ring_key.size
    use = np.zeros(dests.size, dtype=np.bool_)  # destinations whose old row may bound
    any_use = False
    for i in range(dests.size):
        if bounded[i]:
            b = born_of[row_of[dests[i]]]
            use[i] = ring_key[b % n_ring] == b
            any_use |= use[i]
    if not any_use:
        return sure, pick
    reach = np.full(dests.size, -np.inf)
    best_of = np.zeros(m, dtype=np.int64)
    upper_of = np.empty(m)
    low_of = np.empty(m)
    for r in range(m):
        d = inv[r]
        if not use[d]:
            continue
        row = row_of[dests[d]]
        best = 0
        top = np.inf
        for j in range(k):
            u = cost[edges[r, j]] + rows[row, heads[r, j]] if valid[r, j] else np.inf
            if j == 0 or u < top:
                best, top = j, u
        low = np.inf
        for j in range(k):
            if j != best and valid[r, j]:
                lo = cost[edges[r, j]] + lower[r, j]
                if lo < low:
                    low = lo
        best_of[r], upper_of[r], low_of[r] = best, top, low
        old = rows[row, heads[r, best]]
        if old > reach[d]:
            reach[d] = old
    # the edges whose cost rose since one of those rows was computed
    seen = np.zeros(n_ring, dtype=np.bool_)
    for i in range(dests.size):
        if use[i]:
            seen[born_of[row_of[dests[i]]] % n_ring] = True
    n_rose = 0
    rose = np.empty(cost.size, dtype=np.int64)
    for e in range(cost.size):
        for s in range(n_ring):
            if seen[s] and cost[e] > ring[s, e]:
                rose[n_rose] = e
                n_rose += 1
                break
    extra = np.zeros(dests.size)
    for i in range(dests.size):
        if not use[i]:
            continue
        row = row_of[dests[i]]
        s = born_of[row] % n_ring
        total = 0.0
        for j in range(n_rose):
            e = rose[j]
            rise = cost[e] - ring[s, e]
            if rise > 0.0 and rows[row, edge_src[e]] <= reach[i]:
                total += rise
        extra[i] = total
    for r in range(m):
        d = inv[r]
        if not use[d]:
            continue
        top = upper_of[r] + extra[d]
        top += abs(top) * slack + slack
        sure[r] = top < low_of[r]
        pick[r] = best_of[r]
    return sure, pick


@numba.njit(cache=True)
def needed_heads(todo, inv, rest, heads, valid):
    """:meth:`relied.env.live.LiveCostToGo._needed`: ``(need_ptr, need)``, per destination
    of ``todo`` (in order) the heads of the valid slots of its ``rest`` learners."""
    at = np.full(todo.size, -1, dtype=np.int64)
    n = 0
    for i in range(todo.size):
        if todo[i]:
            at[i] = n
            n += 1
    ptr = np.zeros(n + 1, dtype=np.int64)
    m, k = heads.shape
    for r in range(m):
        if rest[r] and at[inv[r]] >= 0:
            for j in range(k):
                if valid[r, j]:
                    ptr[at[inv[r]] + 1] += 1
    for i in range(n):
        ptr[i + 1] += ptr[i]
    need = np.empty(ptr[n], dtype=np.int64)
    fill = ptr[:n].copy()
    for r in range(m):
        if rest[r] and at[inv[r]] >= 0:
            o = at[inv[r]]
            for j in range(k):
                if valid[r, j]:
                    need[fill[o]] = heads[r, j]
                    fill[o] += 1
    return ptr, need


@numba.njit(cache=True)
def reach_stop_lines(vehicles, every, t1, v_status, ready_s, clock_s, v_node, v_dest, v_edge,
                     next_edge, blocked_on, arrive):
    """:meth:`RoutingCore._reach_stop_lines`: of ``vehicles`` (``every``: the active ones, of
    which only those on an edge; else those given, all on an edge), those whose free-flow
    traversal ends by ``t1`` reach their stop line, in order. Returns ``(end, mid, end_edge)``:
    those at their destination's edge (queued to leave), the others (deciding next), the
    edges of ``end``."""
    lim = t1 + _EPS
    n_end = n_mid = 0
    for v in vehicles:
        if (not every or v_status[v] == _ON_EDGE) and ready_s[v] <= lim:
            if v_node[v] == v_dest[v]:
                n_end += 1
            else:
                n_mid += 1
    end = np.empty(n_end, dtype=np.int64)
    mid = np.empty(n_mid, dtype=np.int64)
    end_edge = np.empty(n_end, dtype=np.int64)
    i = k = 0
    for v in vehicles:
        if (not every or v_status[v] == _ON_EDGE) and ready_s[v] <= lim:
            clock_s[v] = ready_s[v]
            if v_node[v] == v_dest[v]:
                end[i] = v
                end_edge[i] = v_edge[v]
                i += 1
            else:
                mid[k] = v
                k += 1
    for j in range(n_end):
        v = end[j]
        v_status[v] = _QUEUED
        next_edge[v] = arrive
        blocked_on[end_edge[j]] = -1
    for j in range(n_mid):
        v_status[mid[j]] = _AT_NODE
    return end, mid, end_edge


@numba.njit(cache=True)
def _free_flow_slot(node, row, out_table, freeflow_s, edge_dst, ff_to_dest):
    """:meth:`RoutingCore._free_flow_choice` of one vehicle (``np.argmin``: the first of
    equals, the first NaN)."""
    best = 0
    low = np.inf
    for j in range(out_table.shape[1]):
        e = out_table[node, j]
        via = freeflow_s[e] + ff_to_dest[row, edge_dst[e]] if e >= 0 else np.inf
        if via != via:
            return j
        if j == 0 or via < low:
            best, low = j, via
    return best


@numba.njit(cache=True)
def decide(active, n, actions, mask_table, arrive, v_status, v_node, v_edge, out_table,
           next_edge, blocked_on, ff_slot, v_dest_row, n_nodes, freeflow_s, edge_dst,
           ff_to_dest):
    """:meth:`RoutingCore._decide` with free-flow shortest-path background vehicles and their
    remembered slots (``ff_slot``, -1: not computed yet; :meth:`_free_flow_slots`): the
    deciding learners take their action, the background its slot. Returns -1, or the first
    deciding learner whose action is masked (then nothing has changed)."""
    m = 0
    for v in active:
        if v_status[v] == _AT_NODE:
            m += 1
    deciding = np.empty(m, dtype=np.int64)
    i = 0
    for v in active:
        if v_status[v] == _AT_NODE:
            deciding[i] = v
            i += 1
    k = out_table.shape[1]
    for v in deciding:
        if v >= n:
            break
        a = actions[v]
        came = v_edge[v]
        if a < 0 or a >= k or not mask_table[came if came >= 0 else v_node[v] + arrive, a]:
            return v
    for v in deciding:
        node = v_node[v]
        if v < n:
            slot = actions[v]
        else:
            key = v_dest_row[v] * n_nodes + node
            slot = ff_slot[key]
            if slot < 0:
                slot = _free_flow_slot(node, v_dest_row[v], out_table, freeflow_s, edge_dst,
                                       ff_to_dest)
                ff_slot[key] = slot
        next_edge[v] = out_table[node, slot]
        v_status[v] = _QUEUED
        if v_edge[v] >= 0:
            blocked_on[v_edge[v]] = -1
    return -1


@numba.njit(cache=True)
def held_still(held, mid, t1, stuck_time_s, v_edge, blocked_on, blocked_since, count,
               storage):
    """:meth:`RoutingCore._held_still`: would the retry hold every one of ``held`` again
    (each queue bound to a full edge, not for the stuck time yet, that edge full even
    without ``mid``, the vehicles just at a stop line)?"""
    for v in held:
        if blocked_on[v_edge[v]] < 0:  # (index -1, origins: never bound)
            return False
    for v in held:
        if not t1 - blocked_since[v_edge[v]] < stuck_time_s:
            return False
    at_stop = np.zeros(storage.size, dtype=np.int64)
    for v in mid:
        at_stop[v_edge[v]] += 1
    for v in held:
        w = blocked_on[v_edge[v]]
        if count[w] - at_stop[w] < storage[w]:
            return False
    return True
