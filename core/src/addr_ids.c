/* addr_ids.c - small integer ids for addresses (sl_addr_id): a policy
 * keys its Lua tables by a number instead of a string made per record.
 * Entries are kept in id order; an open-addressing table of (hash, id)
 * finds them, grown to stay at most half full. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "sluice.h"

#define MIN_SLOTS 1024

struct entry {
	uint8_t addr[16];
	uint8_t ip_version;
	uint8_t pad[7];
};

_Static_assert(sizeof(struct entry) == 24, "entry: hashed as 24 bytes");

struct sl_addr_ids {
	struct entry *entries; /* id - 1 */
	uint32_t n, cap;
	uint64_t *slots; /* hash << 32 | id, 0 empty */
	uint32_t mask;
};

int sl_addr_ids_new(struct sl_addr_ids **out)
{
	struct sl_addr_ids *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->slots = calloc(MIN_SLOTS, sizeof(*t->slots));
	if (!t->slots) {
		free(t);
		return -ENOMEM;
	}
	t->mask = MIN_SLOTS - 1;
	*out = t;
	return 0;
}

void sl_addr_ids_free(struct sl_addr_ids *t)
{
	if (!t)
		return;
	free(t->entries);
	free(t->slots);
	free(t);
}

static uint64_t *slot_of(uint64_t *slots, uint32_t mask, uint32_t hash)
{
	uint32_t i = hash & mask;

	while (slots[i])
		i = (i + 1) & mask;
	return &slots[i];
}

/* Doubles the table and the entry array ahead of one more id. */
static int grow(struct sl_addr_ids *t)
{
	if (t->n == t->cap) {
		uint32_t cap = t->cap ? 2 * t->cap : MIN_SLOTS / 2;
		void *e = realloc(t->entries, (size_t)cap * sizeof(*t->entries));

		if (!e || cap <= t->cap)
			return -ENOMEM;
		t->entries = e;
		t->cap = cap;
	}
	if ((uint64_t)(t->n + 1) * 2 > (uint64_t)t->mask + 1) {
		uint32_t size = 2 * (t->mask + 1);
		uint64_t *slots = size ? calloc(size, sizeof(*slots)) : NULL;

		if (!slots)
			return -ENOMEM;
		for (uint32_t i = 0; i <= t->mask; i++)
			if (t->slots[i])
				*slot_of(slots, size - 1,
					 (uint32_t)(t->slots[i] >> 32)) =
					t->slots[i];
		free(t->slots);
		t->slots = slots;
		t->mask = size - 1;
	}
	return 0;
}

int64_t sl_addr_id(struct sl_addr_ids *t, const uint8_t *addr, int ip_version)
{
	struct entry key = { .ip_version = (uint8_t)ip_version };
	uint32_t hash, i;
	int rc;

	if (ip_version != 4 && ip_version != 6)
		return -EINVAL;
	memcpy(key.addr, addr, ip_version == 4 ? 4 : 16);
	hash = sl_hash24(&key);
	for (i = hash & t->mask; t->slots[i]; i = (i + 1) & t->mask) {
		uint64_t s = t->slots[i];

		if ((uint32_t)(s >> 32) == hash &&
		    sl_equal24(&t->entries[(uint32_t)s - 1], &key))
			return (uint32_t)s;
	}
	rc = grow(t);
	if (rc < 0)
		return rc;
	t->entries[t->n++] = key;
	*slot_of(t->slots, t->mask, hash) = (uint64_t)hash << 32 | t->n;
	return t->n;
}

int sl_addr_of_id(const struct sl_addr_ids *t, int64_t id, uint8_t *addr)
{
	if (id < 1 || id > t->n)
		return -ENOENT;
	memcpy(addr, t->entries[id - 1].addr, 16);
	return t->entries[id - 1].ip_version;
}

uint32_t sl_addr_ids_count(const struct sl_addr_ids *t)
{
	return t->n;
}
