package main

// Conversion of the plugin's hclspec protobuf schema into an hcldec spec, in
// the way Nomad's client does it before decoding a job's or an agent's config
// block. Written here because Nomad's own converter (plugins/shared/hclspec)
// is not packaged for Debian and Nomad is BUSL-licensed since 1.7.

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"wasmtime-driver/gen/hclspec"
)

// convertSpec turns a protobuf Spec into an hcldec.Spec. impliedName is the
// Object attribute key the spec sits under: like Nomad, an Attr or block spec
// with an empty name takes that key as its name.
func convertSpec(spec *hclspec.Spec, impliedName string) (hcldec.Spec, error) {
	if spec == nil {
		return nil, fmt.Errorf("nil spec under %q", impliedName)
	}
	switch block := spec.Block.(type) {
	case *hclspec.Spec_Object:
		return convertObject(block.Object)
	case *hclspec.Spec_Array:
		return convertArray(block.Array)
	case *hclspec.Spec_Attr:
		return convertAttr(block.Attr, impliedName)
	case *hclspec.Spec_BlockValue:
		return convertBlock(block.BlockValue, impliedName)
	case *hclspec.Spec_BlockAttrs:
		return convertBlockAttrs(block.BlockAttrs, impliedName)
	case *hclspec.Spec_BlockList:
		return convertBlockList(block.BlockList, impliedName)
	case *hclspec.Spec_BlockSet:
		return convertBlockSet(block.BlockSet, impliedName)
	case *hclspec.Spec_BlockMap:
		return convertBlockMap(block.BlockMap, impliedName)
	case *hclspec.Spec_Default:
		return convertDefault(block.Default, impliedName)
	case *hclspec.Spec_Literal:
		return convertLiteral(block.Literal)
	default:
		return nil, fmt.Errorf("spec under %q has no block set (got %T)", impliedName, block)
	}
}

func nameOr(name, impliedName string) string {
	if name == "" {
		return impliedName
	}
	return name
}

func convertObject(object *hclspec.Object) (hcldec.Spec, error) {
	result := hcldec.ObjectSpec{}
	for key, nested := range object.Attributes {
		converted, err := convertSpec(nested, key)
		if err != nil {
			return nil, fmt.Errorf("object attribute %q: %w", key, err)
		}
		result[key] = converted
	}
	return result, nil
}

func convertArray(array *hclspec.Array) (hcldec.Spec, error) {
	result := hcldec.TupleSpec{}
	for index, nested := range array.Values {
		converted, err := convertSpec(nested, "")
		if err != nil {
			return nil, fmt.Errorf("array element %d: %w", index, err)
		}
		result = append(result, converted)
	}
	return result, nil
}

// parseType parses an HCL type expression such as "list(number)" with
// typeexpr, as Nomad does; an empty string is a parse error there too.
func parseType(text string) (cty.Type, error) {
	expr, diags := hclsyntax.ParseExpression([]byte(text), "type", hcl.InitialPos)
	if diags.HasErrors() {
		return cty.NilType, fmt.Errorf("invalid type expression %q: %s", text, diags.Error())
	}
	ty, diags := typeexpr.TypeConstraint(expr)
	if diags.HasErrors() {
		return cty.NilType, fmt.Errorf("invalid type expression %q: %s", text, diags.Error())
	}
	return ty, nil
}

func convertAttr(attr *hclspec.Attr, impliedName string) (hcldec.Spec, error) {
	ty, err := parseType(attr.Type)
	if err != nil {
		return nil, err
	}
	return &hcldec.AttrSpec{
		Name:     nameOr(attr.Name, impliedName),
		Type:     ty,
		Required: attr.Required,
	}, nil
}

func convertBlock(block *hclspec.Block, impliedName string) (hcldec.Spec, error) {
	nested, err := convertSpec(block.Nested, "")
	if err != nil {
		return nil, err
	}
	return &hcldec.BlockSpec{
		TypeName: nameOr(block.Name, impliedName),
		Nested:   nested,
		Required: block.Required,
	}, nil
}

func convertBlockAttrs(block *hclspec.BlockAttrs, impliedName string) (hcldec.Spec, error) {
	ty, err := parseType(block.Type)
	if err != nil {
		return nil, err
	}
	return &hcldec.BlockAttrsSpec{
		TypeName:    nameOr(block.Name, impliedName),
		ElementType: ty,
		Required:    block.Required,
	}, nil
}

func convertBlockList(block *hclspec.BlockList, impliedName string) (hcldec.Spec, error) {
	nested, err := convertSpec(block.Nested, "")
	if err != nil {
		return nil, err
	}
	return &hcldec.BlockListSpec{
		TypeName: nameOr(block.Name, impliedName),
		Nested:   nested,
		MinItems: int(block.MinItems),
		MaxItems: int(block.MaxItems),
	}, nil
}

func convertBlockSet(block *hclspec.BlockSet, impliedName string) (hcldec.Spec, error) {
	nested, err := convertSpec(block.Nested, "")
	if err != nil {
		return nil, err
	}
	return &hcldec.BlockSetSpec{
		TypeName: nameOr(block.Name, impliedName),
		Nested:   nested,
		MinItems: int(block.MinItems),
		MaxItems: int(block.MaxItems),
	}, nil
}

func convertBlockMap(block *hclspec.BlockMap, impliedName string) (hcldec.Spec, error) {
	nested, err := convertSpec(block.Nested, "")
	if err != nil {
		return nil, err
	}
	return &hcldec.BlockMapSpec{
		TypeName:   nameOr(block.Name, impliedName),
		LabelNames: block.Labels,
		Nested:     nested,
	}, nil
}

func convertDefault(block *hclspec.Default, impliedName string) (hcldec.Spec, error) {
	primary, err := convertSpec(block.Primary, impliedName)
	if err != nil {
		return nil, fmt.Errorf("default primary: %w", err)
	}
	fallback, err := convertSpec(block.Default, impliedName)
	if err != nil {
		return nil, fmt.Errorf("default value: %w", err)
	}
	return &hcldec.DefaultSpec{Primary: primary, Default: fallback}, nil
}

// convertLiteral evaluates the literal's HCL expression with no variables, so
// an unquoted word fails here just as it breaks the schema in Nomad.
func convertLiteral(literal *hclspec.Literal) (hcldec.Spec, error) {
	expr, diags := hclsyntax.ParseExpression([]byte(literal.Value), "literal", hcl.InitialPos)
	if diags.HasErrors() {
		return nil, fmt.Errorf("invalid literal %q: %s", literal.Value, diags.Error())
	}
	value, diags := expr.Value(nil)
	if diags.HasErrors() {
		return nil, fmt.Errorf("invalid literal %q: %s", literal.Value, diags.Error())
	}
	return &hcldec.LiteralSpec{Value: value}, nil
}
