package launcher

import (
	"slices"
	"strings"
	"testing"

	"github.com/cruz-hpc/cruz/internal/slurm"
)

// FuzzHostlist: expanding a Slurm host list never panics, and the hosts it
// gives, listed again with commas, expand to themselves (the expansion is a
// fixed point: no brackets or commas are left in a host name).
func FuzzHostlist(f *testing.F) {
	for _, s := range []string{"node1", "node[1-3,5],login1", "rack[1-2]-n[01-02]", "n[001-010]", "a[1-2]b[3-4]c",
		"", " ", "[", "]", "n[1-", "n[2-1]", "n[-1]", "n[1-99999999999999999999]", "n[1,,2]", "a,,b", "x[1-2],y[", "n[0-65536]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, list string) {
		hosts, err := ExpandHostlist(list)
		if err != nil {
			return
		}
		if len(hosts) == 0 {
			t.Fatalf("%q: no hosts and no error", list)
		}
		if len(hosts) > slurm.MaxHostlistHosts {
			t.Fatalf("%q: %d hosts, more than the %d allowed", list, len(hosts), slurm.MaxHostlistHosts)
		}
		for _, h := range hosts {
			if h == "" || strings.ContainsAny(h, "[],") {
				t.Fatalf("%q: host %q is empty or holds a bracket or comma", list, h)
			}
		}
		again, err := ExpandHostlist(strings.Join(hosts, ","))
		if err != nil {
			t.Fatalf("%q: its hosts %q do not expand again: %v", list, hosts, err)
		}
		if !slices.Equal(hosts, again) {
			t.Fatalf("%q: expands to %q, which expands to %q", list, hosts, again)
		}
	})
}

// Found by FuzzHostlist: "n[0-65535]m[0-65535]" asked for 4 billion names,
// and a zero-padded range ("n[000…0001-65535]") for 65,536 names as long as
// the list; both are refused, naming the bound.
func TestHostlistBounds(t *testing.T) {
	hosts, err := ExpandHostlist("n[0-65535]")
	if err != nil || len(hosts) != 65536 {
		t.Fatalf("n[0-65535]: %d hosts, %v", len(hosts), err)
	}
	for list, want := range map[string]string{
		"n[0-65535]m[0-1]":                       "expands to more than 65536 hosts",
		"a[0-40000],b[0-40000]":                  "expands to more than 65536 hosts",
		"n[" + strings.Repeat("0", 300) + "1-9]": "are longer than 255 bytes",
		strings.Repeat("h", 256):                 "is longer than 255 bytes",
	} {
		_, err := ExpandHostlist(list)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.40q: %v, want an error saying %q", list, err, want)
		}
	}
}
