complete -c taskd -s c -l config -d 'Configuration file (its conf.d/*.toml drop-ins are merged in)' -r -F
complete -c taskd -s t -l check-config -d 'Load and validate the configuration, print the effective one, exit'
complete -c taskd -s q -l quiet -d 'With --check-config: print nothing on success, only errors'
complete -c taskd -s h -l help -d 'Print help'
complete -c taskd -s V -l version -d 'Print version'
