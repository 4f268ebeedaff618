package agent

import (
	"net/netip"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidateRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  api.RunRequest
		want string
	}{
		{"no command", api.RunRequest{NP: 2, Dir: "/"}, "no command given"},
		{"np zero", api.RunRequest{NP: 0, Argv: []string{"a"}, Dir: "/"}, "--np 0 is out of range"},
		{"np huge", api.RunRequest{NP: 100000, Argv: []string{"a"}, Dir: "/"}, "out of range"},
		{"plain with np", api.RunRequest{NP: 3, Plain: true, Argv: []string{"a"}, Dir: "/"}, "one pod"},
		{"bad name", api.RunRequest{NP: 1, Name: "a b", Argv: []string{"a"}, Dir: "/"}, "not valid"},
		{"relative dir", api.RunRequest{NP: 1, Argv: []string{"a"}, Dir: "x"}, "absolute"},
		{"bad env", api.RunRequest{NP: 1, Argv: []string{"a"}, Dir: "/", Env: []string{"NOEQUALS"}}, "KEY=VALUE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validateRun(&tc.req)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	ok := api.RunRequest{Plain: true, Argv: []string{"/opt/app/solver"}, Dir: "/"}
	require.NoError(t, validateRun(&ok))
	assert.Equal(t, 1, ok.NP)
	assert.Equal(t, "solver", ok.Name, "the name defaults to the command's")
}

func TestPickAddrsWholeSubnet(t *testing.T) {
	sub := netip.MustParsePrefix("10.9.0.0/29")
	used := map[netip.Addr]string{netip.MustParseAddr("10.9.0.3"): "job"}
	got := pickAddrs(sub, sub, used, 10)
	// .0 network, .1 gateway, .3 used, .7 broadcast.
	assert.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.9.0.2/29"), netip.MustParsePrefix("10.9.0.4/29"),
		netip.MustParsePrefix("10.9.0.5/29"), netip.MustParsePrefix("10.9.0.6/29"),
	}, got)
	assert.Len(t, pickAddrs(sub, netip.Prefix{}, nil, 2), 2, "no pool means the whole subnet")
}

func TestPickAddrsPool(t *testing.T) {
	sub := netip.MustParsePrefix("10.203.0.0/16")
	pool := netip.MustParsePrefix("10.203.2.0/24")
	used := map[netip.Addr]string{netip.MustParseAddr("10.203.2.1"): "job"}
	got := pickAddrs(sub, pool, used, 3)
	assert.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.203.2.2/16"), netip.MustParsePrefix("10.203.2.3/16"), netip.MustParsePrefix("10.203.2.4/16"),
	}, got, "addresses come from the pool and carry the subnet's prefix length")
	all := pickAddrs(sub, pool, nil, 1000)
	assert.Len(t, all, 254, "the pool's network and broadcast addresses are left out")
	assert.Equal(t, "10.203.2.254/16", all[len(all)-1].String())

	// A pool at the start of the subnet skips the subnet's gateway address.
	first := pickAddrs(sub, netip.MustParsePrefix("10.203.0.0/24"), nil, 1)
	assert.Equal(t, "10.203.0.2/16", first[0].String())
	// A pool at the end stops before the subnet's broadcast address.
	last := pickAddrs(sub, netip.MustParsePrefix("10.203.255.0/24"), nil, 1000)
	assert.Equal(t, "10.203.255.254/16", last[len(last)-1].String())
}
