package main

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	hcljson "github.com/hashicorp/hcl/v2/json"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"
	ctymsgpack "github.com/zclconf/go-cty/cty/msgpack"
)

// encodeConfig produces the msgpack bytes a Nomad client sends for a config
// map: the map as JSON text, parsed by HCL's JSON syntax, decoded with hcldec
// against the plugin's schema, then marshalled with the value's own type.
//
// The JSON text is used as given, never through Go's float64, so a decimal
// such as 0.1 reaches HCL with full precision as it does in Nomad.
//
// Nomad evaluates with a non-nil EvalContext (so JSON strings are templates
// and "$${" becomes "${"). Its variables are the task environment and a few
// functions; none are set here because the test configs reference neither.
func encodeConfig(spec hcldec.Spec, configJSON []byte) ([]byte, cty.Value, error) {
	file, diags := hcljson.Parse(configJSON, "config.json")
	if diags.HasErrors() {
		return nil, cty.NilVal, fmt.Errorf("failed to parse config JSON: %s", diags.Error())
	}
	ctx := &hcl.EvalContext{Variables: map[string]cty.Value{}}
	value, diags := hcldec.Decode(file.Body, spec, ctx)
	if diags.HasErrors() {
		return nil, cty.NilVal, fmt.Errorf("%s", diags.Error())
	}
	encoded, err := ctymsgpack.Marshal(value, value.Type())
	if err != nil {
		return nil, cty.NilVal, fmt.Errorf("failed to marshal config value: %w", err)
	}
	return encoded, value, nil
}

// ctyValueJSON renders a decoded value for the report, to show what go-cty
// decoded when the bytes differ.
func ctyValueJSON(value cty.Value) string {
	text, err := ctyjson.Marshal(value, value.Type())
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(text)
}
