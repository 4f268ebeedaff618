package slurm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxHostlistHosts bounds the hosts a host list may expand to: far more than
// any cluster, and "n[0-65535]m[0-65535]" must not take the memory of 4
// billion names.
const MaxHostlistHosts = 1 << 16

// maxHostName bounds a host name (a DNS name is at most 253 bytes), so that
// a zero-padded range cannot make every name of the list huge.
const maxHostName = 255

// ExpandHostlist expands a Slurm hostlist such as "node[1-3,5],login1" or
// "rack[1-2]-n[01-02]" into host names, in order.
func ExpandHostlist(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, errors.New("empty host list")
	}
	var out []string
	depth, start := 0, 0
	for i := 0; i <= len(list); i++ {
		if i < len(list) {
			switch list[i] {
			case '[':
				depth++
				continue
			case ']':
				depth--
				if depth < 0 {
					return nil, fmt.Errorf("%q: unbalanced ]", list)
				}
				continue
			case ',':
				if depth > 0 {
					continue
				}
			default:
				continue
			}
		}
		if depth != 0 {
			return nil, fmt.Errorf("%q: unbalanced [", list)
		}
		hosts, err := expandHost(list[start:i])
		if err != nil {
			return nil, fmt.Errorf("%q: %w", list, err)
		}
		if len(out)+len(hosts) > MaxHostlistHosts {
			return nil, fmt.Errorf("%q: expands to more than %d hosts", list, MaxHostlistHosts)
		}
		out = append(out, hosts...)
		start = i + 1
	}
	return out, nil
}

// expandHost expands one host expression: a prefix, an optional bracketed
// range list, and the rest (which may hold more brackets).
func expandHost(h string) ([]string, error) {
	if h == "" {
		return nil, errors.New("empty host name")
	}
	open := strings.IndexByte(h, '[')
	if open < 0 {
		if len(h) > maxHostName {
			return nil, fmt.Errorf("host name %.40q... is longer than %d bytes", h, maxHostName)
		}
		return []string{h}, nil
	}
	end := strings.IndexByte(h[open:], ']')
	if end < 0 {
		return nil, errors.New("unbalanced [")
	}
	end += open
	prefix, ranges, rest := h[:open], h[open+1:end], h[end+1:]
	tails, err := expandHost(rest)
	if rest == "" {
		tails, err = []string{""}, nil
	}
	if err != nil {
		return nil, err
	}
	longestTail := 0
	for _, t := range tails {
		longestTail = max(longestTail, len(t))
	}
	var out []string
	for _, r := range strings.Split(ranges, ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || a > b || a < 0 {
			return nil, fmt.Errorf("bad range %q", r)
		}
		if b-a > 65536 {
			return nil, fmt.Errorf("range %q is too long", r)
		}
		if len(prefix)+max(len(lo), len(hi))+longestTail > maxHostName {
			return nil, fmt.Errorf("the host names of %q are longer than %d bytes", prefix+"["+r+"]", maxHostName)
		}
		if len(out)+(b-a+1)*len(tails) > MaxHostlistHosts {
			return nil, fmt.Errorf("expands to more than %d hosts", MaxHostlistHosts)
		}
		for n := a; n <= b; n++ {
			num := fmt.Sprintf("%0*d", len(lo), n)
			for _, t := range tails {
				out = append(out, prefix+num+t)
			}
		}
	}
	return out, nil
}
