// Form fields generated from JSON Schema: the flow's inputs and the answers of input steps.
// Each field has a label, its description as help text, its default, and a control that fits
// its type: a list for an enum, a checkbox for a boolean, a number box, text, or JSON.
"use strict";

const SchemaForm = (() => {
  const { el } = Timbal;

  /** The fields of an object schema ({properties, required}) in declaration order. */
  function fieldsOf(schema) {
    const properties = (schema && schema.properties) || {};
    const required = new Set((schema && schema.required) || []);
    return Object.entries(properties).map(([name, sub]) => ({ name, schema: sub || {}, required: required.has(name) }));
  }

  function kind(schema) {
    if (Array.isArray(schema.enum)) return "enum";
    const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
    if (type === "boolean" || type === "integer" || type === "number" || type === "string") return type;
    return "json"; // objects, arrays, or no type at all: typed as JSON
  }

  function control(id, field) {
    const schema = field.schema;
    const value = schema.default;
    const common = { id, name: field.name, "data-kind": kind(schema) };
    switch (kind(schema)) {
      case "enum": {
        const select = el("select", { ...common, required: field.required });
        // No default: an empty first choice, which a required field refuses to submit.
        if (value === undefined) select.append(el("option", { value: "" }, field.required ? "(choose one)" : "(none)"));
        schema.enum.forEach((option, i) => {
          select.append(el("option", { value: String(i), selected: option === value }, Timbal.show(option)));
        });
        return select;
      }
      case "boolean":
        return el("input", { ...common, type: "checkbox", checked: value === true });
      case "integer":
      case "number":
        return el("input", {
          ...common, type: "number", step: kind(schema) === "integer" ? "1" : "any",
          min: schema.minimum, max: schema.maximum, value: value, required: field.required,
        });
      case "string": {
        const area = el("textarea", { ...common, rows: 2, required: field.required });
        if (value !== undefined) area.value = value;
        return area;
      }
      default: {
        const area = el("textarea", { ...common, rows: 3, class: "code", spellcheck: "false", required: field.required });
        if (value !== undefined) area.value = JSON.stringify(value, null, 2);
        return area;
      }
    }
  }

  /** The form's fields for `fields` under `container`; ids start with `prefix`. */
  function render(container, fields, prefix) {
    const rows = fields.map((field) => {
      const id = `${prefix}-${field.name}`;
      const help = field.schema.description;
      const input = control(id, field);
      if (help) input.setAttribute("aria-describedby", `${id}-help`);
      // The marker sits beside the label, not in it: the field's name stays its accessible name
      // (screen readers announce the `required` attribute themselves).
      const label = el("span", { class: "field-head" }, el("label", { for: id }, field.schema.title || field.name),
        field.required ? el("span", { class: "required", "aria-hidden": "true" }, " required") : null);
      const typeName = kind(field.schema) === "json" ? "JSON" : kind(field.schema);
      return el("div", { class: `field field-${kind(field.schema)}` },
        input.type === "checkbox" ? [input, " ", label] : [label, input],
        el("small", { class: "type" }, typeName),
        help ? el("small", { class: "help", id: `${id}-help` }, help) : null);
    });
    Timbal.fill(container, rows);
  }

  /** The typed values of the fields, or throws an Error naming the field that is wrong. */
  function read(container, fields, prefix) {
    const values = {};
    for (const field of fields) {
      const input = container.querySelector(`#${CSS.escape(`${prefix}-${field.name}`)}`);
      const raw = input.type === "checkbox" ? input.checked : input.value;
      const k = kind(field.schema);
      if (k === "boolean") {
        values[field.name] = raw;
        continue;
      }
      if (raw === "" && k !== "string") {
        if (field.required) throw new Error(`${field.name}: a value is required`);
        continue;
      }
      if (k === "string" && raw === "" && !field.required && field.schema.default === undefined) continue;
      if (k === "enum") values[field.name] = field.schema.enum[Number(raw)];
      else if (k === "integer" || k === "number") values[field.name] = Number(raw);
      else if (k === "string") values[field.name] = raw;
      else {
        try {
          values[field.name] = JSON.parse(raw);
        } catch (error) {
          throw new Error(`${field.name}: not valid JSON (${error.message})`);
        }
      }
    }
    return values;
  }

  return { fieldsOf, render, read };
})();
