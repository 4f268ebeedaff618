package cluster

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNodePool(t *testing.T) {
	sub := netip.MustParsePrefix("10.203.0.0/16")
	assert.Equal(t, "10.203.1.0/24", nodePool(sub, 1).String())
	assert.Equal(t, "10.203.200.0/24", nodePool(sub, 200).String())
	assert.Equal(t, "10.0.3.0/24", nodePool(netip.MustParsePrefix("10.0.0.0/8"), 3).String())
}

func TestOptionsCheck(t *testing.T) {
	ok := Options{Nodes: 3}
	ok.defaults()
	_, err := ok.check()
	require.NoError(t, err)
	for _, tt := range []struct {
		mutate func(*Options)
		want   string
	}{
		{func(o *Options) { o.Nodes = 0 }, "--nodes 0 is out of range: a cluster has 1 to 200 nodes"},
		{func(o *Options) { o.Nodes = 201 }, "--nodes 201 is out of range"},
		{func(o *Options) { o.Subnet = "10.203.0.0/24" }, `--subnet "10.203.0.0/24" is not an IPv4 CIDR with a prefix length from 8 to 16`},
		{func(o *Options) { o.Subnet = "10.203.1.0/16" }, "no host bits set"},
		{func(o *Options) { o.LAN = "a-very-long-lan" }, `--lan "a-very-long-lan" is not an interface name of 1 to 11 bytes`},
		{func(o *Options) { o.Dir = "rel" }, `--dir "rel" is not an absolute path`},
		{func(o *Options) { o.Store = "rel" }, `--store "rel" is not an absolute path`},
	} {
		o := ok
		tt.mutate(&o)
		_, err := o.check()
		require.Error(t, err)
		assert.Contains(t, err.Error(), tt.want)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(dir)
	require.ErrorIs(t, err, ErrNotUp)
	assert.Contains(t, err.Error(), "cruz cluster up")
	st := &State{Dir: dir, LAN: "czlan0", Nodes: []Node{{Name: "node1", Socket: "/x/node1/cruzd.sock"}, {Name: "node2"}}}
	require.NoError(t, writeState(st))
	got, err := Load(dir)
	require.NoError(t, err)
	n, err := got.Node("node1")
	require.NoError(t, err)
	assert.Equal(t, "/x/node1/cruzd.sock", n.Socket)
	_, err = got.Node("node9")
	assert.ErrorContains(t, err, `no node "node9"; its nodes are node1, node2`)
	require.NoError(t, os.WriteFile(filepath.Join(dir, StateFile), []byte("{"), 0o644))
	_, err = Load(dir)
	assert.ErrorContains(t, err, "cruz cluster down --dir "+dir)
}
