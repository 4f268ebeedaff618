package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "12": 12, "3KiB": 3 << 10, "12MiB": 12 << 20, "500GiB": 500 << 30, "2TiB": 2 << 40} {
		n, err := ParseBytes(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, n, in)
	}
	for _, bad := range []string{"", "MiB", "-1", "+5", "1.5GiB", "12MB", "12 MiB", "9999999999TiB", "ten"} {
		_, err := ParseBytes(bad)
		require.ErrorContains(t, err, "is not a byte count: give digits, optionally followed by KiB, MiB, GiB or TiB", bad)
	}
}

func TestStoreQuotas(t *testing.T) {
	d := Default()
	q, key := d.QuotaOf(0)
	assert.Zero(t, q, "no quota by default")
	assert.Equal(t, "store.quota", key)

	c, err := parse(t, "version = 1\n[store]\nquota = 1048576\nuser_quotas = [\"root=12MiB\", \"nobody=0\"]\n")
	require.NoError(t, err)
	q, key = c.QuotaOf(0)
	assert.Equal(t, int64(12<<20), q)
	assert.Equal(t, `store.user_quotas "root=12MiB"`, key)
	q, _ = c.QuotaOf(65534)
	assert.Zero(t, q, "nobody=0: no quota for nobody")
	q, key = c.QuotaOf(4242)
	assert.Equal(t, int64(1<<20), q, "everyone else has store.quota")
	assert.Equal(t, "store.quota", key)

	_, err = parse(t, "version = 1\n[store]\nquota = -1\n")
	requireErrorContains(t, err, "store.quota: -1 is not a byte count, 0 (no quota) or more (example: 0)")
	_, err = parse(t, "version = 1\n[store]\nquota = \"1GiB\"\n")
	requireErrorContains(t, err, `store.quota: "1GiB" is not a byte count, 0 (no quota) or more`)
	_, err = parse(t, "version = 1\n[store]\nuser_quotas = [\"root\"]\n")
	requireErrorContains(t, err, `store.user_quotas[0]: "root" is not "USER=BYTES" (example: "alice=500GiB")`)
	_, err = parse(t, "version = 1\n[store]\nuser_quotas = [\"root=lots\"]\n")
	requireErrorContains(t, err, `store.user_quotas[0]: "root=lots": "lots" is not a byte count`)
	_, err = parse(t, "version = 1\n[store]\nuser_quotas = [\"no-such-user-xyz=1GiB\"]\n")
	requireErrorContains(t, err, `store.user_quotas[0]: "no-such-user-xyz=1GiB": no user "no-such-user-xyz" on this node`)
	_, err = parse(t, "version = 1\n[store]\nuser_quotas = [\"root=1GiB\", \"root=2GiB\"]\n")
	requireErrorContains(t, err, `store.user_quotas[1]: user "root" (uid 0) already has a quota ("root=1GiB"); keep one entry per user`)
	_, err = parse(t, "version = 1\n[store]\nquotas = 5\n")
	requireErrorContains(t, err, "unknown key store.quotas (did you mean store.quota?)")
}
