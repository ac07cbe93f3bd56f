package ctl

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// Agents prints the agents the controller knows, with their pool ("-" for
// the default pool), their state (cordoned: its pool is scaling it down;
// conflict: more than one address reports its ID), their used and free
// slots, and on Err a line for each agent ID that more than one address
// reports (the controller places nothing on it until one is left). With
// OutputJSON it prints {"items": [...]} of the agents' full status
// (protobuf JSON, which leaves out empty fields: no "pool" in the default
// pool, "cordoned" only when true), conflictingAddresses included.
func (c *Client) Agents(ctx context.Context, output string) error {
	if output != "" && output != OutputTable && output != OutputJSON {
		return usagef("-o %q: want table or json", output)
	}
	resp, err := c.api.ListAgents(ctx, connect.NewRequest(&fsbv1.ListAgentsRequest{}))
	if err != nil {
		return c.describe(err, target{})
	}
	agents := slices.Clone(resp.Msg.GetAgents())
	slices.SortFunc(agents, func(a, b *fsbv1.AgentStatus) int { return cmp.Compare(a.GetAgentId(), b.GetAgentId()) })
	if output == OutputJSON {
		items := make([]json.RawMessage, 0, len(agents))
		for _, a := range agents {
			b, err := protojson.Marshal(a)
			if err != nil {
				return err
			}
			items = append(items, b)
		}
		return c.writeJSON(struct {
			Items []json.RawMessage `json:"items"`
		}{items})
	}
	if len(agents) == 0 {
		fmt.Fprintln(c.err, "No agents: the controller knows none yet.")
		return nil
	}
	tw := tabwriter.NewWriter(c.out, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tPOOL\tSTATE\tADDRESS\tNODE\tSANDBOXES\tRUNTIMES\tIMAGES")
	for _, a := range agents {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%d\n",
			a.GetAgentId(), cmp.Or(a.GetPool(), "-"), agentState(a), orNone(a.GetAdvertiseAddress()), orNone(a.GetNodeName()),
			len(a.GetSandboxes()), a.GetCapacity(),
			orNone(strings.Join(a.GetRuntimes(), ",")), len(a.GetImages()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// After the table, so that the warning is the last thing seen and the
	// table on stdout stays as scripts parse it.
	for _, a := range agents {
		if addrs := a.GetConflictingAddresses(); len(addrs) > 1 {
			fmt.Fprintf(c.err, "agent %s is reported by %s: it gets no new sandboxes until only one address reports it\n",
				a.GetAgentId(), andList(addrs))
		}
	}
	return nil
}

// agentState says why the controller places nothing new on an agent:
// "cordoned" (its pool is removing it), "conflict" (several addresses
// report its ID), or "-" when nothing holds it back.
func agentState(a *fsbv1.AgentStatus) string {
	switch {
	case a.GetCordoned():
		return "cordoned"
	case len(a.GetConflictingAddresses()) > 1:
		return "conflict"
	}
	return "-"
}

// andList joins words as a sentence does: "a", "a and b", "a, b and c".
func andList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}
