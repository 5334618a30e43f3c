"""Finding 12: instance ids came from an mt19937_64 seeded with one 32-bit random_device value, so
anyone who saw 156 ids could compute every later one (MT19937-64's state is its last 312 outputs).
Ids now come from the OS CSPRNG. This test is the attack: it recovers the generator from observed
ids and predicts the next one."""
import gymfarm

MASK = (1 << 64) - 1
N, M = 312, 156
UPPER, LOWER = 0xFFFFFFFF80000000, 0x7FFFFFFF
A = 0xB5026F5AA96619E9


def temper(y: int) -> int:
    y ^= (y >> 29) & 0x5555555555555555
    y ^= (y << 17) & 0x71D67FFFEDA60000
    y ^= (y << 37) & 0xFFF7EEE000000000
    y ^= y >> 43
    return y & MASK


def _undo_right(y: int, shift: int, mask: int = MASK) -> int:
    x = y
    for _ in range(64 // shift + 1):
        x = y ^ ((x >> shift) & mask)
    return x & MASK


def _undo_left(y: int, shift: int, mask: int) -> int:
    x = y
    for _ in range(64 // shift + 1):
        x = y ^ ((x << shift) & mask)
    return x & MASK


def untemper(y: int) -> int:
    y = _undo_right(y, 43)
    y = _undo_left(y, 37, 0xFFF7EEE000000000)
    y = _undo_left(y, 17, 0x71D67FFFEDA60000)
    return _undo_right(y, 29, 0x5555555555555555)


def outputs_of(instance_id: str):
    """The two 64-bit draws the old broker wrote into an id, lowest nibble first."""
    out = []
    for half in (instance_id[:16], instance_id[16:]):
        out.append(sum(int(ch, 16) << (4 * i) for i, ch in enumerate(half)))
    return out


def predict_next_id(ids):
    state = [untemper(y) for iid in ids for y in outputs_of(iid)][-N:]
    assert len(state) == N
    draws = []
    for _ in range(2):
        k = len(state) - N
        y = (state[k] & UPPER) | (state[k + 1] & LOWER)
        nxt = state[k + M] ^ (y >> 1) ^ (A if y & 1 else 0)
        state.append(nxt)
        draws.append(temper(nxt))
    hexd = "0123456789abcdef"
    return "".join(hexd[(r >> (4 * i)) & 0xF] for r in draws for i in range(16))


def test_the_generator_round_trips():
    # the attack itself is right: tempering inverts, so a farm with the old ids would be predicted
    for y in (0, 1, MASK, 0x0123456789ABCDEF, 0xDEADBEEFCAFEBABE):
        assert untemper(temper(y)) == y


def test_instance_ids_cannot_be_predicted_from_earlier_ones(start_farm):
    farm = start_farm(workers=4)
    ids = []
    with gymfarm.connect(farm.endpoint) as c:
        while len(ids) < N // 2 + 1:
            made = c.call_many([("make", "", {"env_id": "CartPole-v1"})] * 4)
            ids += [m["instance_id"] for m in made]
            c.close_many([m["instance_id"] for m in made])
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    for k in range(N // 2, len(ids)):
        assert predict_next_id(ids[:k]) != ids[k]
