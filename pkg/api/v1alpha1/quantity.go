package v1alpha1

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// UnmarshalJSON reads cpu and memory written as a string ("500m") or, as
// the schema allows and a Pod's resources do, as an integer (2): an object
// made with kubectl must decode, or the controller could not see it.
func (r *Resources) UnmarshalJSON(data []byte) error {
	var raw struct {
		CPU    json.RawMessage `json:"cpu,omitempty"`
		Memory json.RawMessage `json:"memory,omitempty"`
		Pids   int64           `json:"pids,omitempty"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	cpu, err := intOrString("cpu", raw.CPU)
	if err != nil {
		return err
	}
	memory, err := intOrString("memory", raw.Memory)
	if err != nil {
		return err
	}
	*r = Resources{CPU: cpu, Memory: memory, Pids: raw.Pids}
	return nil
}

// intOrString returns a JSON string's text, or an integer's digits.
func intOrString(field string, v json.RawMessage) (string, error) {
	if len(v) == 0 || bytes.Equal(v, []byte("null")) {
		return "", nil
	}
	if v[0] == '"' {
		var s string
		err := json.Unmarshal(v, &s)
		return s, err
	}
	var n json.Number
	if err := json.Unmarshal(v, &n); err != nil {
		return "", fmt.Errorf("resources.%s: want a quantity as a string or an integer, not %s", field, v)
	}
	if _, err := n.Int64(); err != nil {
		return "", fmt.Errorf("resources.%s: %s is not an integer: write a fraction as a string, such as \"500m\"", field, n)
	}
	return n.String(), nil
}
