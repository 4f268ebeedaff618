package pod

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestGuardScript(t *testing.T) {
	s := guardScript([]uint16{7170, 9170},
		[]netip.AddrPort{netip.MustParseAddrPort("10.9.0.2:7170"), netip.MustParseAddrPort("10.9.0.2:9170"), netip.MustParseAddrPort("[fd00::3]:7171")})
	assert.Equal(t, `add table bridge cruz_agent_guard
delete table bridge cruz_agent_guard
table bridge cruz_agent_guard {
	chain input {
		type filter hook input priority -300; policy accept;
		iifname "cz*" tcp dport 7170 drop
		iifname "cz*" tcp dport 9170 drop
	}
	chain forward {
		type filter hook forward priority -300; policy accept;
		iifname "cz*" ip daddr 10.9.0.2 tcp dport 7170 drop
		iifname "cz*" ip daddr 10.9.0.2 tcp dport 9170 drop
		iifname "cz*" ip6 daddr fd00::3 tcp dport 7171 drop
	}
}
`, s)
}
