package config

import (
	"fmt"
	"os/user"
	"strconv"
	"strings"
)

// Store quotas: store.quota is every user's share of the checkpoint store;
// store.user_quotas gives some users another. A user is named, not given
// by uid, so that the file reads as the admin thinks of it; the name must
// resolve on the node, or a typo would silently leave that user unbounded.

// ParseBytes reads a byte count: digits, optionally followed by KiB, MiB,
// GiB or TiB (powers of 1024).
func ParseBytes(s string) (int64, error) {
	num, mult := s, int64(1)
	for i, suf := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if n, ok := strings.CutSuffix(s, suf); ok {
			num, mult = n, int64(1)<<(10*(i+1))
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || num == "" || num[0] == '+' || n > (1<<62)/mult {
		return 0, fmt.Errorf("%s is not a byte count: give digits, optionally followed by KiB, MiB, GiB or TiB (example: %s)", show(s), show("500GiB"))
	}
	return n * mult, nil
}

// UserQuota is one entry of store.user_quotas.
type UserQuota struct {
	User  string
	UID   uint32
	Bytes int64 // 0: no quota
}

// parseUserQuota reads "USER=BYTES".
func parseUserQuota(s string) (UserQuota, error) {
	name, size, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return UserQuota{}, fmt.Errorf("%s is not \"USER=BYTES\" (example: %s)", show(s), show("alice=500GiB"))
	}
	n, err := ParseBytes(size)
	if err != nil {
		return UserQuota{}, fmt.Errorf("%s: %w", show(s), err)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return UserQuota{}, fmt.Errorf("%s: no user %s on this node (%v): name an existing user", show(s), show(name), err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return UserQuota{}, fmt.Errorf("%s: user %s has uid %q, not a number", show(s), show(name), u.Uid)
	}
	return UserQuota{User: name, UID: uint32(uid), Bytes: n}, nil
}

func (c Config) quotaErrors() []error {
	var errs []error
	seen := map[uint32]string{}
	for i, s := range c.Store.UserQuotas {
		q, err := parseUserQuota(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("store.user_quotas[%d]: %w", i, err))
			continue
		}
		if prev, dup := seen[q.UID]; dup {
			errs = append(errs, fmt.Errorf("store.user_quotas[%d]: user %s (uid %d) already has a quota (%s); keep one entry per user", i, show(q.User), q.UID, show(prev)))
		}
		seen[q.UID] = s
	}
	return errs
}

// QuotaOf is uid's quota in the checkpoint store in bytes (0: none), and
// the key that sets it, for messages.
func (c Config) QuotaOf(uid uint32) (int64, string) {
	for _, s := range c.Store.UserQuotas {
		if q, err := parseUserQuota(s); err == nil && q.UID == uid {
			return q.Bytes, fmt.Sprintf("store.user_quotas %s", show(s))
		}
	}
	return c.Store.Quota, "store.quota"
}
