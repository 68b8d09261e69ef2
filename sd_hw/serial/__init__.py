"""The element-serial SmartDeal core: lanes of one DSP each, weights streamed from
single-port RAM (the iCE40 UP5K's SPRAM), one activation element a cycle."""
