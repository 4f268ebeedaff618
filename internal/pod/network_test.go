package pod

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPodIdentity(t *testing.T) {
	ip := netip.MustParseAddr("10.203.1.7")
	assert.Equal(t, "02:c2:0a:cb:01:07", MAC(ip).String(), "the MAC follows the address, so both move with the rank")
	n := HostVethName("4f2a9c01-r12")
	assert.LessOrEqual(t, len(n), 15)
	assert.True(t, strings.HasPrefix(n, HostVethPrefix))
	assert.Equal(t, n, HostVethName("4f2a9c01-r12"))
	assert.NotEqual(t, n, HostVethName("4f2a9c01-r13"))
}
