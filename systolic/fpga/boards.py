"""Plain facts of the board design (:mod:`systolic.fpga.board`) that the command line and the host link need
without loading Amaranth: the boards it builds for and the serial protocol's command bytes."""

from __future__ import annotations

__all__ = ["BOARDS", "CMD_CSR_WRITE", "CMD_CSR_READ", "CMD_MEM_WRITE", "CMD_MEM_READ"]

#: Board name -> (amaranth-boards platform "module:class", what it is).
BOARDS = {
    "ulx3s-85f": ("amaranth_boards.ulx3s:ULX3S_85F_Platform", "Radiona ULX3S with the ECP5 LFE5U-85F"),
    "ulx3s-45f": ("amaranth_boards.ulx3s:ULX3S_45F_Platform", "Radiona ULX3S with the ECP5 LFE5U-45F"),
}

#: Command bytes of the serial protocol (docs/fpga.md, "A real board").
CMD_CSR_WRITE, CMD_CSR_READ, CMD_MEM_WRITE, CMD_MEM_READ = 0x01, 0x02, 0x03, 0x04
