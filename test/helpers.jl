# Helpers shared by the test files (runtests.jl includes this into each file's module first).

"The exception `f()` throws, or `nothing`."
errof(f) = try f(); nothing catch e; e end

"Tests that `f()` throws an `MMSBError` named `name`; returns the error."
function expect_error(f, name)
    e = errof(f)
    @test e isa MMSBError
    e isa MMSBError && @test e.name == name
    return e
end
