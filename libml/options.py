"""Settings whose fields are also command-line flags: one source for each default.

A settings class is a dataclass whose fields are made with `option(default, help)`. `define_flags`
defines one absl flag per field (its type from the default; `choices` makes an enum flag), and
`from_flags` builds the settings from the parsed flags. Library code takes the settings object;
only entry points read flags.

    @dataclasses.dataclass
    class Config:
        batch: int = option(64, 'Batch size.')
    define_flags(Config)            # at module level of the module that owns the flags
    config = from_flags(Config)     # in main, after parsing
"""
import dataclasses

from absl import flags


def option(default, help, **flag_args):
    """A dataclass field that is also a flag: `flag_args` go to absl (e.g. choices, lower_bound)."""
    return dataclasses.field(default=default, metadata=dict(help=help, **flag_args))


def define_flags(settings, flag_values=flags.FLAGS):
    """Defines a flag for every field of the dataclass `settings`."""
    for field in dataclasses.fields(settings):
        extra = dict(field.metadata)
        help_text = extra.pop('help')
        choices = extra.pop('choices', None)
        name, default = field.name, field.default
        if choices is not None:
            flags.DEFINE_enum(name, default, choices, help_text, flag_values=flag_values, **extra)
        elif isinstance(default, bool):  # before int: a bool is an int
            flags.DEFINE_bool(name, default, help_text, flag_values=flag_values, **extra)
        elif isinstance(default, int):
            flags.DEFINE_integer(name, default, help_text, flag_values=flag_values, **extra)
        elif isinstance(default, float):
            flags.DEFINE_float(name, default, help_text, flag_values=flag_values, **extra)
        else:
            flags.DEFINE_string(name, default, help_text, flag_values=flag_values, **extra)


def from_flags(settings, flag_values=flags.FLAGS):
    """An instance of the dataclass `settings` with every field's value read from its flag."""
    return settings(**{f.name: getattr(flag_values, f.name) for f in dataclasses.fields(settings)})


def changed(settings_object):
    """{field: value} of the fields whose value differs from the default."""
    return {f.name: getattr(settings_object, f.name) for f in dataclasses.fields(settings_object)
            if getattr(settings_object, f.name) != f.default}
